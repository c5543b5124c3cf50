"""The token buckets of ``corral.auth.ratelimit`` on a fake clock."""

from __future__ import annotations

from corral.auth.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_the_limit_then_refuses_with_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter({"api": 60}, clock)
    verdicts = [limiter.take("api", "key:a") for _ in range(60)]
    assert all(v.allowed for v in verdicts)
    assert [v.remaining for v in verdicts[:3]] == [59, 58, 57] and verdicts[-1].remaining == 0
    refused = limiter.take("api", "key:a")
    assert (refused.allowed, refused.limit, refused.remaining, refused.retry_after_s) == (False, 60, 0, 1)
    assert limiter.take("api", "key:b").allowed  # another caller has its own bucket
    clock.now += 1.0  # 60 a minute: one token a second
    assert limiter.take("api", "key:a").allowed
    assert not limiter.take("api", "key:a").allowed


def test_retry_after_is_whole_seconds_until_one_token() -> None:
    clock = Clock()
    limiter = RateLimiter({"runs": 6}, clock)  # one token every 10 s
    for _ in range(6):
        limiter.take("runs", "x")
    assert limiter.take("runs", "x").retry_after_s == 10
    clock.now += 7.5
    assert limiter.take("runs", "x").retry_after_s == 3


def test_surfaces_are_separate_and_zero_is_unlimited() -> None:
    limiter = RateLimiter({"api": 1, "xgen": 0}, Clock())
    assert limiter.take("api", "k").allowed and not limiter.take("api", "k").allowed
    assert all(limiter.take("xgen", "k").allowed for _ in range(1000))
    assert limiter.take("unknown", "k").allowed


def test_idle_buckets_are_dropped() -> None:
    clock = Clock()
    limiter = RateLimiter({"api": 10}, clock)
    for i in range(5000):
        limiter.take("api", f"addr:{i}")
    clock.now += 61
    for _ in range(5000):  # crosses a sweep
        limiter.take("api", "key:busy")
    assert len(limiter._buckets) < 1000
