"""The summary's question and answer: a winner only where the margin is outside what the data
can tell apart, and the basis of the figures said in words."""

from __future__ import annotations

import pytest

from reports import verdict
from plumbing.errors import ConfigError
from reports.studies import PlanInfo, Stat, load_study
from reports.verdict import Option, Question

SERVER = Question("resnet50", (99.0, 15.0), "q")
OFFLINE = Question("resnet50", None, "q")


def _searched(name: str, met: float, missed: float | None) -> Option:
    return Option(name, "fp16", "torch", "GPU", met, upper=missed, basis="b")


def _offline(name: str, mean: float, std: float, n: int) -> Option:
    return Option(name, "fp16", "torch", "GPU", mean, spread=Stat(mean, std, n), basis="b")


def test_a_search_winner_is_clear_only_above_the_runner_ups_lowest_miss():
    clear = verdict.decide(SERVER, [_searched("A", 1450, 1500), _searched("B", 820, 850)])
    assert clear.clear and clear.answer.startswith("A fp16 (torch): 1,450 queries/s per GPU")
    assert "1.77x the runner-up B fp16 (torch)" in clear.answer and "1.71x to 1.83x" in clear.answer
    assert len(clear.highlights) == 3 and clear.highlights[2].startswith("Margin: 1.77x")
    overlap = verdict.decide(SERVER, [_searched("A", 1000, 1040), _searched("B", 990, 1020)])
    assert not overlap.clear and overlap.answer.startswith("No clear winner: A fp16 (torch)")
    open_ended = verdict.decide(SERVER, [_searched("A", 2000, 2100), _searched("B", 1000, None)])
    assert not open_ended.clear and "may be higher" in open_ended.answer


def test_an_offline_winner_needs_its_ratio_two_spreads_above_one():
    assert verdict.decide(OFFLINE, [_offline("A", 1220, 10, 3), _offline("B", 1000, 10, 3)]).clear
    noisy = verdict.decide(OFFLINE, [_offline("A", 1050, 30, 3), _offline("B", 1000, 30, 3)])
    assert not noisy.clear and "within two standard deviations" in noisy.answer
    one_run = verdict.decide(OFFLINE, [_offline("A", 2000, 0, 1), _offline("B", 1000, 0, 1)])
    assert not one_run.clear and "one run has no spread" in one_run.answer and "± 0" not in one_run.answer


def test_excluded_options_never_answer_and_a_lone_option_gives_no_margin():
    unconfirmed = Option("L4x4", "fp16", "torch", "GPU", 1405, upper=1500, excluded="failed confirmation")
    lone = verdict.decide(SERVER, [unconfirmed, _searched("T4", 820, 850)])
    assert lone.answer.startswith("T4 fp16 (torch): 820") and "no margin" in lone.answer and not lone.clear
    none = verdict.decide(SERVER, [unconfirmed])
    assert none.answer.startswith("No option answers it") and "failed confirmation" in none.answer


def test_the_question_comes_from_the_model_and_the_slo_searched_at(golden):
    studies = [load_study(golden(n)) for n in ("t4", "l4", "cpu")]
    asked = verdict.ask(studies, None, None, "resnet50")
    assert asked.slo == (99.0, 15.0)
    assert asked.text == ("Which system and precision serve the most resnet50 queries per second per device at "
                          "p99 <= 15 ms?")
    assert verdict.ask(studies, "resnet50", "Which card for the search page?", "resnet50").text == \
        "Which card for the search page?"
    with pytest.raises(ConfigError, match="no study measured 'resnet18'; they hold resnet50"):
        verdict.ask(studies, "resnet18", None, "resnet50")


def test_options_rank_per_device_and_say_why_one_is_left_out(golden):
    studies = [load_study(golden(n)) for n in ("t4", "l4", "l4x4", "cpu")]
    ranked = verdict.options(verdict.ask(studies, None, None, "resnet50"), studies)
    assert [(o.system, o.precision, o.value, o.excluded) for o in ranked] == [
        ("L4x1_torch", "fp16", 1450.0, None), ("T4x1_torch", "fp16", 820.0, None),
        ("L4x4_torch", "fp16", 1405.0, "its maximum failed the full-length confirmation run"),
        ("CPU_onnxruntime", "fp32", None, "no load met the SLO"),
        ("L4x1_torch", "fp32", None, "not searched at p99 <= 15 ms"),
        ("T4x1_torch", "fp32", None, "not searched at p99 <= 15 ms")]
    assert ranked[0].upper == 1500.0 and ranked[2].upper == 1500.0  # L4x4: 6000 QPS over 4 GPUs


def test_without_a_search_the_question_is_offline_throughput_from_valid_points(golden):
    study = load_study(golden("cpu"))
    no_search = type(study)(**{**study.__dict__, "slo_searches": ()})
    asked = verdict.ask([no_search], None, None, "resnet50")
    assert asked.slo is None and "Offline throughput" in asked.text
    (option,) = verdict.options(asked, [no_search])
    assert option.basis.startswith("Offline bs16") and option.spread.n == 3


def test_the_basis_is_said_in_words():
    plan = PlanInfo(3, ("Offline", "Server"), 1000.0, 600.0, 3000.0, True, "seeded", "quick")
    assert verdict.basis_text(plan) == ("3 runs of 1 s per point, SLO search runs of 0.6 s, confirmed by a 3 s run, "
                                        "accuracy gate skipped, seeded random weights (not trained), quick run profile")
    assert verdict.basis_text(None).startswith("run lengths, weights and profile not recorded")


def test_only_full_length_gated_submission_runs_count_as_submission_grade(golden):
    study = load_study(golden("t4"))
    full = PlanInfo(1, ("Offline",), 600_000.0, 1000.0, 600_000.0, False, "torchvision", "submission")
    with_plan = lambda plan: type(study)(**{**study.__dict__, "plan": plan})  # noqa: E731
    assert verdict.submission_grade([with_plan(full)])
    assert not verdict.submission_grade([with_plan(full), with_plan(None)])
    short = PlanInfo(3, ("Offline",), 1000.0, 600.0, 3000.0, False, "torchvision", "submission")
    assert not verdict.submission_grade([with_plan(short)])
