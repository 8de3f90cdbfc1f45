"""configs/paper_adaptive.yaml is configs/paper.yaml with adaptive judging and a 5 % audit, and
nothing else changed; configs/paper.yaml stays the paper's procedure (SPEC §5a, issue 28)."""

from __future__ import annotations

from pathlib import Path

from metajudge.config import load_config
from metajudge.costs import project_costs
from tests.unit.test_paper_mini import _resolved

ROOT = Path(__file__).resolve().parents[2]

SWITCHED = {"judge.adaptive": True, "meta_judge.adaptive": True,
            "judge.audit_share": 0.05, "meta_judge.audit_share": 0.05}


def test_paper_adaptive_is_paper_with_adaptive_judging_and_a_5_percent_audit() -> None:
    paper, adaptive = _resolved("paper.yaml"), _resolved("paper_adaptive.yaml")
    assert paper.keys() == adaptive.keys()
    differ = {key: adaptive[key] for key in paper if paper[key] != adaptive[key]}
    assert differ == SWITCHED
    assert not paper["judge.adaptive"] and not paper["meta_judge.adaptive"]
    assert paper["judge.audit_share"] == paper["meta_judge.audit_share"] == 0


def test_the_dry_run_projects_fewer_judging_requests_and_names_its_assumption() -> None:
    full = project_costs(load_config(ROOT / "configs" / "paper.yaml"), tokens_per_second=20000)
    mine = project_costs(load_config(ROOT / "configs" / "paper_adaptive.yaml"),
                         tokens_per_second=20000)
    for stage in ("judge", "meta-judge"):
        ours = mine[mine["stage"] == stage]["requests"].sum()
        theirs = full[full["stage"] == stage]["requests"].sum()
        assert 0.3 * theirs < ours < 0.7 * theirs, stage
    assert "default: the SPEC §5a simulation" in mine.attrs["adaptive"]
    assert "adaptive" not in full.attrs or not full.attrs["adaptive"]
