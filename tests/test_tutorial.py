"""The tutorial's three hand-written networks, as specs, against the same nets in torch."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnsearch import build, check
from tests.conftest import load_spec
from tests.torch_reference import assert_table_matches_torch


class SimpleCNN(nn.Module):  # tutorial question 3, with a classifier so it is a whole net
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc = nn.Linear(8 * 16 * 16, 10)

    def features(self, x):
        return self.pool(self.conv(x))

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


class Net(nn.Module):  # tutorial question 4 (with its missing F import fixed)
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(16 * 15 * 15, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = x.view(-1, 16 * 15 * 15)
        return self.fc1(x)


class CNN(nn.Module):  # tutorial question 5, answer A
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(10, 20, 5)
        self.fc1 = nn.Linear(20 * 13 * 13, 50)
        self.fc2 = nn.Linear(50, 5)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 20 * 13 * 13)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


def _flops(model, shape):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, *shape))
    return counter.get_total_flops()


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_simple_cnn_matches_hand_written():
    spec = load_spec("tutorial_simple.json")
    table = assert_table_matches_torch(spec)
    hand = SimpleCNN()
    assert table.rows[1].shape == tuple(hand.features(torch.randn(1, 3, 32, 32)).shape[1:]) == (8, 16, 16)
    assert table.params == _params(hand)
    assert table.flops == _flops(hand, (3, 32, 32))
    assert table.spatial_chain == "32->16"


def test_net32_matches_hand_written_and_takes_its_weights():
    spec = load_spec("tutorial_net32.json")
    table = assert_table_matches_torch(spec)
    hand = Net().eval()
    assert [r.shape for r in table.rows if r.name in ("conv1", "pool1")] == [(16, 30, 30), (16, 15, 15)]
    assert table.rows[[r.name for r in table.rows].index("fc1")].args == (16 * 15 * 15, 10)
    assert (table.params, table.flops) == (_params(hand), _flops(hand, (3, 32, 32)))
    model = build(spec).eval()
    model.load_state_dict(hand.state_dict(), strict=True)
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(model(x), hand(x))


def test_cnn64_matches_hand_written_and_takes_its_weights(tutorial_cnn64):
    table = assert_table_matches_torch(tutorial_cnn64)
    assert table.spatial_chain == "64->60->30->26->13"
    assert table.rows[[r.name for r in table.rows].index("flatten")].shape == (20 * 13 * 13,)
    hand = CNN().eval()
    assert (table.params, table.flops) == (_params(hand), _flops(hand, (3, 64, 64)))
    model = build(tutorial_cnn64).eval()
    model.load_state_dict(hand.state_dict(), strict=True)
    x = torch.randn(3, 3, 64, 64)
    assert torch.equal(model(x), hand(x))


def test_wrong_tutorial_answers_are_what_check_rules_out():
    """Options B-D of question 5 guessed the flatten size; check() computes it."""
    spec = load_spec("tutorial_cnn64.json")
    fc1 = next(r for r in check(spec).rows if r.name == "fc1")
    assert fc1.args[0] == 3380 and fc1.args[0] not in (20 * 12 * 12, 20 * 14 * 14)
