"""The report's first section: the question, the answer with its margin (reports/verdict.py
decides it), the figures that carry it, every option ranked, and what the figures rest on
(run lengths, repeats, accuracy gate, weights, run profile, valid runs) per study."""

from __future__ import annotations

from reports import verdict
from reports.document import INT, NUM, SPREAD, Column, Figure, Section, Table
from reports.plots import Bar, bar_plot
from reports.studies import Study


def summary_section(question: verdict.Question, studies: list[Study], colors: dict[str, str]) -> Section:
    ranked = verdict.options(question, studies)
    answer = verdict.decide(question, ranked)
    section = Section("Summary", facts=[("Question", question.text), ("Answer", answer.answer),
                                        ("Rests on", rests_on(studies))], highlights=answer.highlights)
    section.tables += [options_table(question, ranked), basis_table(studies)]
    bars = [_bar(question, o) for o in ranked if o.value is not None]
    if bars:
        metric = "queries/s" if question.slo else "samples/s"
        what = ("error bar: up to the lowest load its search missed" if question.slo
                else "error bar: one standard deviation over runs")
        png = bar_plot(f"{question.model}: {question.metric}", f"{metric} per device", bars, colors)
        hatched = "; hatched: excluded (the table says why)" if any(not b.valid for b in bars) else ""
        section.figures.append(Figure(f"summary_{question.model}.png",
                                      f"{question.model}: {question.metric}; {what}{hatched}", png))
    return section


def _bar(question: verdict.Question, o: verdict.Option) -> Bar:
    sd = o.spread.std if o.spread is not None and o.spread.n > 1 else 0.0
    high = (o.upper - o.value if o.upper is not None else 0.0) if question.slo else sd
    return Bar(o.label, o.system, o.value, 0.0 if question.slo else sd, high, o.excluded is None)


def options_table(question: verdict.Question, ranked: list[verdict.Option]) -> Table:
    metric = "queries/s" if question.slo else "samples/s"
    table = Table([Column("rank", INT), "option", Column(f"{metric} per device", SPREAD, 0),
                   Column("lowest missed load per device", NUM, 0), "basis", "excluded because"],
                  name="summary_options", caption=f"Every option, ranked by {question.metric}",
                  empty=f"No study measured {question.model}.")
    rank = 0
    for o in ranked:
        rank += o.excluded is None
        table.add(rank if o.excluded is None else "-", o.label, o.spread or o.value,
                  (o.upper if o.upper is not None else "none seen") if question.slo and o.value else "-",
                  o.basis or "-", o.excluded or "-")
    return table


def rests_on(studies: list[Study]) -> str:
    groups: dict[str, list[str]] = {}
    for s in studies:
        groups.setdefault(verdict.basis_text(s.plan), []).append(s.name)
    text = (next(iter(groups)) if len(groups) == 1 else
            "; ".join(f"{', '.join(names)}: {basis}" for basis, names in groups.items()))
    runs = sum(len(p.runs) for s in studies for p in s.points)
    valid = sum(p.valid_runs for s in studies for p in s.points)
    if verdict.submission_grade(studies):
        grade = ""
    elif any(s.plan is None for s in studies):
        grade = "; with run lengths not recorded, not shown to be submission-grade"
    else:
        grade = (f"; a quick study, not submission-grade (a submission runs at least {verdict.SUBMISSION_MIN_S} s "
                 "per run, with the accuracy gate)")
    return f"{text}; {valid} of {runs} point runs VALID{grade}."


def basis_table(studies: list[Study]) -> Table:
    table = Table(["system", Column("runs per point", INT), Column("point run s", NUM),
                   Column("search run s", NUM), Column("confirmation run s", NUM), "accuracy gate",
                   "weights", "run profile", "valid point runs"],
                  name="run_basis", caption="What the figures rest on, per study")
    missing = "not recorded"
    for s in studies:
        p = s.plan
        valid = f"{sum(x.valid_runs for x in s.points)} of {sum(len(x.runs) for x in s.points)}"
        if p is None:
            table.add(s.name, *[missing] * 7, valid)
            continue
        searched = "Server" in p.scenarios
        table.add(s.name, p.repeats, p.duration_ms / 1000, p.search_ms / 1000 if searched else "no Server search",
                  p.confirm_ms / 1000 if searched else "no Server search",
                  "skipped" if p.skip_accuracy_gate else "on", verdict.weights_text(p.weights), p.run_profile,
                  valid)
    return table
