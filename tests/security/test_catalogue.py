"""The catalogue machinery itself (so an unmarked attack cannot slip in)."""

import pytest


@pytest.mark.attack(attack="an adversarial test without its attack marker",
                    promise="every test in tests/security names its attack and promise")
def test_every_security_test_is_catalogued(request: pytest.FixtureRequest) -> None:
    items = [i for i in request.session.items if "/tests/security/" in str(i.fspath)]
    assert items and all(i.get_closest_marker("attack") for i in items)
