import threading, time
import pytest
from dashboard import demo
from dashboard.demo_episodes import Trouble
from dashboard.collection import collector
from dashboard.kinds.nats import deadletters as dl
from dashboard.models import Incident, Destination
from dashboard.triage import evaluate as triage

pytestmark = pytest.mark.django_db

def test_scratch(rabbit_broker, kafka_broker, nats_broker, rabbitmq, kafka, nats):
    dl.check_capture(nats_broker)
    stop = threading.Event(); trouble = Trouble()
    cfgs = [
        {"name": "rabbit", "kind": "rabbitmq", "amqp_url": rabbitmq["amqp_url"]},
        {"name": "kafka", "kind": "kafka", "bootstrap_servers": kafka["bootstrap_servers"]},
        {"name": "nats", "kind": "nats", "url": nats["url"]},
    ]
    threads = [threading.Thread(target=demo.keep_running, args=(c, stop, trouble), daemon=True) for c in cfgs]
    for t in threads: t.start()
    t0 = time.time(); seen = {}
    try:
        while time.time() - t0 < 120:
            time.sleep(5)
            for b in (rabbit_broker, kafka_broker, nats_broker):
                b.refresh_from_db(); collector.collect(b); b.refresh_from_db(); triage.evaluate(b)
            for i in Incident.objects.exclude(state="pending"):
                if seen.get(i.pk) != i.state:
                    seen[i.pk] = i.state
                    print(f"{time.time()-t0:6.0f} {i.state:8} {i.broker.name} {i.cause} {i.key}: {i.summary}", flush=True)
        for k in ["stream/JOBS", "group/analytics", "group/billing", "//invoices", "//emails"]:
            d = Destination.objects.filter(key=k).first(); print("   ", k, d and d.backlog, flush=True)
    finally:
        stop.set()
        for t in threads: t.join(10)
