"""Faults that look like refusals and are not: a TLS handshake cut by the
network or a restarting broker is tried again (it used to fail at once as
Ferry.AuthError), and one bootstrap broker cutting it does not hide the
others. Found by an adversarial review of the fail-fast change."""
import threading
import time

from conftest import TARGET, Ferry, list_topics, unique
from support.security import SASL_SSL, SECRETS, configure, fill, scram_source
from support.tcp_pause_proxy import PausableProxy


def test_a_tls_handshake_cut_by_a_restarting_broker_is_retried_not_a_refusal(tmp_path):
    """A broker (or NLB / PrivateLink endpoint in front of it) that accepts
    TCP and closes it at once for 4 s, as during a rolling restart: a network
    fault, so `ferry run --once` should retry and replicate, as for any
    other connection failure."""
    topic = unique("adv-tlscut")
    fill(topic, 1, 5)
    host, port = SASL_SSL.rsplit(":", 1)
    proxy = PausableProxy("127.0.0.1", int(port))
    proxy.pause()  # accept, then close: TCP up, TLS handshake cut
    threading.Timer(4, proxy.paused.clear).start()
    ferry = Ferry(*configure(tmp_path, [topic], scram_source(SECRETS["SHA512"], bootstrap=f"localhost:{proxy.port}")))
    started = time.monotonic()
    res = ferry.run("--once", "--give-up-seconds", "60", timeout=180, env={"RUST_LOG": "warn,ferry_adapters=info"})
    took = time.monotonic() - started
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"{took:.1f} s: {out[-1500:]}"
    assert topic in list_topics(TARGET)


def test_one_bootstrap_broker_cutting_tls_does_not_hide_the_healthy_one(tmp_path):
    """Bootstrap list of two: the first (down, accept-then-close), the second
    healthy. Any client tries the next bootstrap broker."""
    topic = unique("adv-tls2")
    fill(topic, 1, 5)
    host, port = SASL_SSL.rsplit(":", 1)
    proxy = PausableProxy("127.0.0.1", int(port))
    proxy.pause()  # stays down for the whole run
    ferry = Ferry(*configure(tmp_path, [topic],
                             scram_source(SECRETS["SHA512"], bootstrap=f"localhost:{proxy.port},{SASL_SSL}")))
    started = time.monotonic()
    res = ferry.run("--once", "--give-up-seconds", "30", timeout=180)
    took = time.monotonic() - started
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"{took:.1f} s: {out[-800:]}"


def test_control_plaintext_broker_cut_is_retried(tmp_path):
    """Control: the same accept-then-close on a PLAINTEXT source for 4 s."""
    import os  # noqa: E401
    topic = unique("adv-plaincut")
    fill(topic, 1, 5)
    src = os.environ["SOURCE_BOOTSTRAP"]
    h, p = src.rsplit(":", 1)
    proxy = PausableProxy(h, int(p))
    proxy.pause()
    threading.Timer(4, proxy.paused.clear).start()
    source = {"ApacheKafkaCluster": {"ApacheKafkaClusterId": "source", "BootstrapBrokerString": f"127.0.0.1:{proxy.port}"},
              "EncryptionInTransit": {"EncryptionType": "PLAINTEXT"}}
    ferry = Ferry(*configure(tmp_path, [topic], source))
    started = time.monotonic()
    res = ferry.run("--once", "--give-up-seconds", "60", timeout=180)
    took = time.monotonic() - started
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"{took:.1f} s: {out[-800:]}"
