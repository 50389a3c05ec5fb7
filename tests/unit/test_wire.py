from tidelog.broker import wire
from tests.unit.golden.capture import iter_fixtures
def test_x():
    assert list(iter_fixtures())
