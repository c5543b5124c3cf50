"""Prometheus metrics of one corral process, in a registry of their own.

``Metrics()`` makes a fresh ``CollectorRegistry``: nothing registers into the global
one, so tests can build as many apps as they like. ``create_app`` makes one, hands it
to ``Core`` (the services count sandboxes and commands, the gateway its traffic) and
serves it at ``GET /metrics`` (no auth).

    name                                     type       labels                  what
    xgen_http_requests_total                 counter    method, path, status    HTTP requests (spec 002)
    xgen_http_request_duration_seconds       histogram  method, path            their latency (spec 002)
    xgen_sandboxes_active                    gauge                              live sandboxes of this node
    xgen_sandbox_create_total                counter                            sandboxes created
    xgen_sandbox_delete_total                counter                            sandboxes stopped (kill, idle, lost)
    corral_sandbox_create_duration_seconds   histogram                          time to create one
    corral_exec_total                        counter    outcome                 commands run (ok, error)
    corral_exec_duration_seconds             histogram                          their round trip in the service
    corral_gateway_requests_total            counter    status                  requests the gateway answered
    corral_gateway_bytes_total               counter    direction               bytes to (in) / from (out) sandboxes
    corral_rate_limited_total                counter    surface                 requests refused with 429
    corral_audit_records_total               counter    outcome                 audit records written / failed
    corral_audit_queue_depth                 gauge                              records waiting to be written
    corral_sandboxes_standby                 gauge                              sandboxes started ahead, not yet taken
    corral_standby_claims_total              counter    result                  creates that took one (hit) or not (miss)
    corral_model_requests_total              counter    org, via, status        Messages API calls (via host or sandbox)
    corral_model_input_tokens_total          counter    org, via                tokens in, from the answers
    corral_model_output_tokens_total         counter    org, via                tokens out, from the answers

``path`` is the route template (``/api/sandboxes/{sandbox_id}``), never the raw path,
so ids do not explode the label set; requests no route matched are ``<unmatched>``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily

FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "xgen_http_requests_total", "HTTP requests", ["method", "path", "status"], registry=r
        )
        self.http_duration = Histogram(
            "xgen_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "path"],
            buckets=FAST,
            registry=r,
        )
        self.sandboxes_active = Gauge("xgen_sandboxes_active", "Live sandboxes of this node", registry=r)
        self.sandbox_creates = Counter("xgen_sandbox_create_total", "Sandboxes created", registry=r)
        self.sandbox_deletes = Counter("xgen_sandbox_delete_total", "Sandboxes stopped", registry=r)
        self.create_duration = Histogram(
            "corral_sandbox_create_duration_seconds", "Time to create a sandbox", buckets=FAST, registry=r
        )
        self.execs = Counter("corral_exec_total", "Commands run", ["outcome"], registry=r)
        self.exec_duration = Histogram(
            "corral_exec_duration_seconds", "Command round trip in the service", buckets=FAST, registry=r
        )
        self.gateway = GatewayTraffic()
        r.register(self.gateway)
        self.rate_limited = Counter(
            "corral_rate_limited_total", "Requests refused with 429", ["surface"], registry=r
        )
        self.audit_records = Counter("corral_audit_records_total", "Audit records", ["outcome"], registry=r)
        self.audit_queue = Gauge(
            "corral_audit_queue_depth", "Audit records waiting to be written", registry=r
        )
        self.sandboxes_standby = Gauge(
            "corral_sandboxes_standby", "Sandboxes started ahead, not yet taken by a create", registry=r
        )
        self.standby_claims = Counter(
            "corral_standby_claims_total",
            "Creates that took a standby sandbox (hit) or not (miss)",
            ["result"],
            registry=r,
        )
        self.model_requests = Counter(
            "corral_model_requests_total", "Model API calls", ["org", "via", "status"], registry=r
        )
        self.model_input_tokens = Counter(
            "corral_model_input_tokens_total", "Model input tokens", ["org", "via"], registry=r
        )
        self.model_output_tokens = Counter(
            "corral_model_output_tokens_total", "Model output tokens", ["org", "via"], registry=r
        )

    # ---- what the services and the gateway call ------------------------------------------

    def sandbox_created(self, seconds: float) -> None:
        self.sandbox_creates.inc()
        self.sandboxes_active.inc()
        self.create_duration.observe(seconds)

    def sandbox_stopped(self) -> None:
        self.sandbox_deletes.inc()
        self.sandboxes_active.dec()

    def exec_done(self, seconds: float, ok: bool) -> None:
        self.execs.labels("ok" if ok else "error").inc()
        self.exec_duration.observe(seconds)

    def gateway_request(self, status: int, bytes_in: int = 0, bytes_out: int = 0) -> None:
        """One request the gateway answered; bytes sent to and received from the sandbox."""
        traffic = self.gateway
        traffic.requests[status] = traffic.requests.get(status, 0) + 1
        traffic.bytes_in += bytes_in
        traffic.bytes_out += bytes_out

    def model_call(self, org_id: str, via: str, status: int, input_tokens: int, output_tokens: int) -> None:
        """One call of the model API by an org (``via``: host or sandbox) and what it used."""
        self.model_requests.labels(org_id, via, str(status)).inc()
        self.model_input_tokens.labels(org_id, via).inc(input_tokens)
        self.model_output_tokens.labels(org_id, via).inc(output_tokens)

    def http_request(self, method: str, path: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, path, str(status)).inc()
        self.http_duration.labels(method, path).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class GatewayTraffic:
    """The gateway's two counters as plain integers, read when /metrics is scraped: the
    gateway counts every request, and on its fastest path prometheus_client's locked
    counters cost about a twentieth of a request. Written and read under the GIL (the
    gateway runs on the event loop's thread; a scrape sorts a copy)."""

    def __init__(self) -> None:
        self.requests: dict[int, int] = {}  # status -> count
        self.bytes_in = 0
        self.bytes_out = 0

    def collect(self) -> Iterator[CounterMetricFamily]:
        requests = CounterMetricFamily(
            "corral_gateway_requests", "Requests answered by the gateway", labels=["status"]
        )
        for status, count in sorted(self.requests.items()):
            requests.add_metric([str(status)], count)
        yield requests
        moved = CounterMetricFamily("corral_gateway_bytes", "Bytes through the gateway", labels=["direction"])
        moved.add_metric(["in"], self.bytes_in)
        moved.add_metric(["out"], self.bytes_out)
        yield moved
