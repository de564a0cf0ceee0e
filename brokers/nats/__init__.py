"""NATS and JetStream: the monitoring endpoints over HTTP, messages through nats-py.

Talks to a server's monitoring port (`monitoring_url`) for collections, 4 HTTP
requests each, and its client port (`url`) for messages. Options and costs are
in `adapter`'s docstring.

    adapter         the `Nats` adapter: /varz, /healthz, /jsz, /connz per collection
    monitor         JetStream streams and consumers as Destinations
    monitor_server  the server itself (/varz, /connz, /subsz, routes, gateways, leaves)
    client          a synchronous nats-py client for stream reads and publishing
    wire            what NATS sends and takes: headers, stored messages, PubAcks
    browse          paging through a stream without a consumer
    pipeline        reading, publishing and deleting many messages at once
    deadletters     the stream that captures max-deliveries and terminated advisories
    transfer        `SequenceTransfer`: replay through JetStream, a cursor moving on PubAcks
    internals       the nats-py internals these use, why, and the versions checked

Importing this package imports nothing of nats-py; the modules do.
"""
