"""Kafka, and brokers that speak its protocol (Tansu, Redpanda), through kafka-python.

Talks to the brokers' Kafka port. Options (`bootstrap_servers`, SASL and TLS) and
the cost of one collection (a fixed handful of batched requests, never one per
group) are in `adapter`'s docstring; what kafka-python cannot do for us is there too.

    adapter      the `Kafka` adapter: monitoring, and the shared admin client
    monitor      one collection's requests in stages (monitor_wire builds and
                 decodes them, monitor_map turns answers into Destinations)
    browse       a topic's records by offset, time or recency
    filters      key, header and body filters (regexes through brokers.linear_regex)
    scan         whole-range scans with raw Fetch requests, for searches
    publish      one record from the publish page; produce: whole batches, for replays
    offsets      consumer-group offset resets (reset_spec parses and describes them)
    transfer     `LogTransfer`: replay records elsewhere, a cursor moving on acks=all
    internals    the kafka-python internals these use, why, and the versions checked

Importing this package imports nothing of kafka-python; the modules do.
"""
