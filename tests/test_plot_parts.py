"""The report's figures as data, in process: each study keeps one colour across its points
and its best-so-far line, and the axes say what they show. Surviving mutants before."""

from cnnsearch.plots import PALETTE, history_figure
from cnnsearch.report import trials_frame
from tests.test_report_frame import add, new_study


def test_the_history_gives_each_study_one_colour_and_names_its_axes():
    frames = {}
    for name in ("a", "b"):
        study = new_study(name)
        add(study, acc=0.7, lat=1.0)
        add(study, acc=0.9, lat=2.0)
        frames[name] = trials_frame(study)
    fig = history_figure(frames)
    points, best, points_b, best_b = fig.data
    assert points.marker.color == best.line.color == PALETTE[0]
    assert points_b.marker.color == best_b.line.color == PALETTE[1]
    assert points.marker.size == 7 and list(best.y) == [0.7, 0.9]
    assert fig.layout.yaxis.title.text == "validation accuracy" and fig.layout.xaxis.title.text == "trial"
    assert fig.layout.height == 420
