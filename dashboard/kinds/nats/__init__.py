"""NATS on the Django side: the server's pages, JetStream streams and consumers, dead letters
captured from advisories, replays (brokers/nats/ talks to the server).

    kind         `Nats`, the Kind: what kind-neutral code asks of NATS
    urls         its pages and JSON endpoints, mounted by dashboard/urls.py
    status       a consumer's status (stalled, lagging) and the stream, consumer and server panels
    jobs         replay and copy from a stream or the advisory capture: checks, preview, routing
    deadletters  the advisory capture stream, dead-letter streams, what a dead letter says
    connect      one nats-py connection per broker for the pages
    tail         the live tail of a subject (a core subscription)
    views/       messages, publish and request/reply, server, the dead-letters page
    templates/   dashboard/nats/*.html
    templatetags nats_monitor_tags
    management/  the nats_capture command
"""
