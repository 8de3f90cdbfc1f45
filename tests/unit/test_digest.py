"""What `metajudge run` prints at the end (issue 30): a short table per iteration, on a
hand-made per-iteration table, and where the rest is."""

from __future__ import annotations

import math

import pandas as pd

from metajudge.analysis.judge_health import Thresholds
from metajudge.cli import build_parser
from metajudge.report.digest import VIEW_URL, format_digest

NAN = math.nan

EFT = {"iteration": 0, "eft_prompts": 20, "eft_kept": 12, "eft_examples": 12,
       "eft_sft_steps": 6, "eft_final_loss": 1.2345, "eft_seconds": 302.0,
       "total_seconds": 302.0}
FIRST = {"iteration": 1, "actor_pairs": 8, "judge_pairs": 3, "judge_pairs_chosen_completed": 2,
         "judgments": 96, "scores_parsed": 10, "verdicts_completed": 80, "scores_forced": 4,
         "generate_failed": 0, "judge_failed": 2, "meta-judge_failed": 0,
         "score_top_share": 0.5, "meta_first_share": 0.9, "share_parsed": 10 / 96,
         "dpo_steps": 11, "dpo_first_loss": 0.6931, "dpo_loss": 0.6014,
         "dpo_first_reward_margin": 0.0, "dpo_reward_margin": 0.1927,
         "dpo_first_reward_accuracy": 0.0, "dpo_reward_accuracy": 1.0,
         "generate_seconds": 34.4, "judge_seconds": 170.5, "meta-judge_seconds": 88.3,
         "pairs_seconds": 0.0, "train_seconds": 78.3, "total_seconds": 371.5,
         "alarms": "first_position"}
# the loop stopped before training (stop_on_alarm): no meta-judge verdict, no DPO step
SECOND = {"iteration": 2, "actor_pairs": 7, "judge_pairs": 0,
          "judge_pairs_chosen_completed": 0, "judgments": 96, "scores_parsed": 0,
          "verdicts_completed": 0, "scores_forced": 96, "generate_failed": 0,
          "judge_failed": 0, "meta-judge_failed": 0, "score_top_share": 0.95,
          "meta_first_share": NAN, "share_parsed": 0.0, "dpo_steps": 0, "dpo_first_loss": NAN,
          "dpo_loss": NAN, "dpo_first_reward_margin": NAN, "dpo_reward_margin": NAN,
          "dpo_first_reward_accuracy": NAN, "dpo_reward_accuracy": NAN,
          "generate_seconds": 3725.0, "judge_seconds": 59.96, "meta-judge_seconds": 0.0,
          "pairs_seconds": 0.1, "train_seconds": 0.0, "total_seconds": 3785.1,
          "alarms": "score_collapse;parse_drop"}

EXPECTED = """\
iteration 0 (EFT seed stage)
  EFT          12 of 20 prompts kept, 12 examples, 6 SFT steps, last loss 1.234
  stage times  eft 5 min 02 s

iteration 1
  pairs            8 actor, 3 judge (2 chosen with a completed verdict)
  judge scores     96 judgments: 10 parsed, 80 completed, 4 forced, 2 failed
  failed requests  judge 2
  alarms           first_position: the meta-judge gives 0.90 of its verdicts to the \
first-shown judgment (outside [0.2, 0.8])
  DPO, 11 steps    loss 0.693 -> 0.601; margin 0.000 -> 0.193; accuracy 0.00 -> 1.00
  stage times      generate 34.4 s, judge 2 min 50 s, meta-judge 1 min 28 s, train 1 min 18 s \
(total 6 min 12 s)

iteration 2
  pairs            7 actor, 0 judge
  judge scores     96 judgments: 0 parsed, 0 completed, 96 forced, 0 failed
  failed requests  none
  alarms           score_collapse: one score takes 0.95 of the scored judgments (more than 0.9)
                   parse_drop: the parsed share fell from 0.10 to 0.00 (by more than 0.05)
  DPO              not trained
  stage times      generate 1 h 02 min, judge 1 min 00 s, pairs 0.1 s (total 1 h 03 min)

every column, per iteration:  runs/tiny/summary.csv
tables and figures:           metajudge report runs/tiny --out results/tiny
every record, in a browser:   metajudge view runs/tiny   (then open http://127.0.0.1:8765/)"""


def test_the_end_of_a_run_reads_at_a_glance() -> None:
    table = pd.DataFrame([EFT, FIRST, SECOND])
    assert format_digest(table, "runs/tiny", Thresholds()) == EXPECTED
    # as summary.csv holds it (indexed by iteration), the same text
    assert format_digest(table.set_index("iteration"), "runs/tiny") == EXPECTED


def test_the_alarms_follow_the_runs_thresholds() -> None:
    table = pd.DataFrame([FIRST])
    text = format_digest(table, "r", Thresholds(first_position_band=(0.1, 0.95)))
    assert "  alarms           none\n" in text


def test_the_printed_view_address_is_the_viewers_default() -> None:
    args = build_parser().parse_args(["view", "runs/tiny"])
    assert VIEW_URL == f"http://{args.host}:{args.port}/"


def test_a_run_stopped_by_an_alarm_ends_with_its_table(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    # review of issue 30 C: with judge_health.stop_on_alarm the loop raised before the digest
    # was printed, so such a run ended with the error line alone
    from pathlib import Path

    from metajudge.cli import main

    config = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
    sets = [a for s in ["backend.kind=instant_backend:InstantBackend",
                        "prompts.per_iteration=4", "runner.retry_delay_s=0",
                        "judge_health.stop_on_alarm=true",
                        "judge_health.max_top_score_share=0.1"] for a in ("--set", s)]
    assert main(["run", str(config), "--out", str(tmp_path / "run"), "--no-progress",
                 *sets]) == 2
    out, err = capsys.readouterr()
    assert "judge-health alarm score_collapse" in err
    assert out.startswith("iteration 1\n  pairs ")
    assert "  alarms           score_collapse: one score takes " in out
    assert "  DPO              not trained\n" in out
    assert f"metajudge view {tmp_path / 'run'}" in out


def test_the_printed_commands_can_be_pasted_for_a_run_with_a_space() -> None:
    # review of issue 30 C: `--out "runs/my run"` printed `metajudge view runs/my run`
    text = format_digest(pd.DataFrame([FIRST]), "runs/my run")
    assert "metajudge report 'runs/my run' --out 'results/my run'\n" in text
    assert "metajudge view 'runs/my run'   (then open " in text
