"""The HTML report's parts in process: a table's cells as written, a shape table's caption,
and the page's figures (plotly.js inlined once, before the first figure). The browser test
checks the page renders; these pin what it holds. Each was a surviving mutant."""

import pandas as pd

from cnnsearch.report_page import _shape_table, _table, write_report
from tests.test_report_frame import add, new_study


def test_a_table_writes_accuracies_to_four_places_counts_with_commas_and_flags_as_stars():
    df = pd.DataFrame([{"val_accuracy": 0.91234, "latency_ms": 1.23456, "params": 12345, "pareto": True,
                        "summary": "c4k3"}])
    cells = _table(df).split("<tbody>")[1]
    assert cells == ('<tr><td class="">0.9123</td><td class="">1.235</td><td class="">12,345</td>'
                     '<td class="">*</td><td class="text">c4k3</td></tr></tbody></table>')
    assert '<th class="text">summary</th>' in _table(df)


def test_a_shape_table_is_captioned_with_the_trials_figures():
    study = new_study()
    add(study, acc=0.875, lat=1.5)
    html = _shape_table(study.trials[0])
    caption = html.split("</h4>")[0]
    assert caption == "<h4>trial 0: c4k3 &mdash; accuracy 0.8750, 1.500 ms, 475 params, 3.46k FLOPs, spatial 8-&gt;6"
    assert '<td class="text">conv1</td><td class="text">conv</td><td class="text">4x6x6</td>' in html


def test_the_page_inlines_plotly_once_before_its_first_figure(tmp_path):
    study = new_study()
    add(study, acc=0.9, lat=1.0)
    add(study, acc=0.8, lat=0.5)
    out, csv = write_report([study], tmp_path / "r.html")
    page = out.read_text()
    assert csv.name == "r_s.csv"
    assert 'id="pareto"' in page and 'id="history"' in page
    assert page.count("* plotly.js v") == 1 and page.index("* plotly.js v") < page.index('id="pareto"')
    assert '"responsive": true' in page and '"displaylogo": false' in page
    assert "<th class=\"\">val_accuracy</th>" in page and ">accuracy</th>" not in page


def test_the_leaderboard_shows_finalize_s_test_score_and_says_which_latency(tmp_path):
    study = new_study()
    add(study, acc=0.9, lat=1.0, final={"test_accuracy_mean": 0.91, "test_accuracy_std": 0.012})
    add(study, acc=0.8, lat=0.5)
    page = write_report([study], tmp_path / "r.html")[0].read_text()
    assert "<td class=\"\">0.9100 +- 0.0120</td>" in page
    assert "Latency: the search's figures (none re-timed).</p><h3>Leaderboard</h3>" in page


def test_a_study_without_a_feasible_trial_says_so(tmp_path):
    study = new_study()
    add(study, status="over_limit", acc=0.0, lat=1.0)
    page = write_report([study], tmp_path / "r.html")[0].read_text()
    assert "<h3>Leaderboard</h3><p>No feasible trial yet.</p>" in page
    assert "<h3>Pareto-optimal architectures</h3><p>None yet.</p>" in page
    assert "<p class='muted'>1 trials: 1 over_limit. Objectives: accuracy, latency_ms." in page


def test_the_page_shows_the_shape_tables_of_five_front_trials_at_most(tmp_path):
    study = new_study()
    for i in range(7):  # each more accurate and slower than the last: all seven on the front
        add(study, acc=0.5 + i / 20, lat=1.0 + i)
    page = write_report([study], tmp_path / "r.html")[0].read_text()
    assert page.count("<h4>trial ") == 5
    assert write_report([study], tmp_path / "r.html", max_shape_tables=7)[0].read_text().count("<h4>trial ") == 7


def test_a_page_says_how_many_trials_show_a_re_timed_latency_and_the_figures_are_responsive(tmp_path):
    study = new_study()
    add(study, acc=0.9, lat=1.0, latency_remeasured_ms=0.8)
    add(study, acc=0.8, lat=0.5)
    page = write_report([study], tmp_path / "r.html")[0].read_text()
    assert ("Latency: 1 trial(s) show the figure re-timed side by side at the end of the search "
            "(latency_from 're-timed', latency_remeasured_ms in the CSV), the others the search's.</p>") in page
    assert page.count('{"displaylogo": false, "responsive": true}') == 2  # the Pareto plot and the history


def test_the_page_says_when_it_was_made_in_utc_whatever_the_machine_s_time_zone(tmp_path, monkeypatch):
    import time
    from datetime import UTC, datetime, timedelta

    study = new_study()
    add(study, acc=0.9, lat=1.0)
    monkeypatch.setenv("TZ", "JST-9")  # nine hours ahead of UTC (a POSIX rule: no tzdata needed)
    time.tzset()
    try:
        page = write_report([study], tmp_path / "r.html")[0].read_text()
    finally:
        monkeypatch.undo()
        time.tzset()
    stamp = page.split("<p class='muted'>Generated ")[1].split(" UTC.")[0]
    made = datetime.strptime(stamp, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - made) < timedelta(minutes=2)
