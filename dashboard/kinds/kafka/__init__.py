"""Kafka on the Django side: its pages, status rules, replays and searches (brokers/kafka/ talks
to the cluster).

    kind         `Kafka`, the Kind: what kind-neutral code asks of Kafka
    urls         its pages and JSON endpoints, mounted by dashboard/urls.py
    status       a consumer group's status (Burrow's rules) and the topic and group panels
    jobs         replay and copy of a topic's records: checks, preview, routing, the transfer
    deadletters  which topics hold dead letters, and what a record says of its death
    resets       consumer-group offset resets: preview, apply, audit
    search       whole-topic searches run by the worker (tasks.run_search)
    tail         the live tail's reader of a topic
    views/       messages, publish, offsets, searches, tail and the dead-letters page's part
    templates/   dashboard/kafka/*.html
    templatetags kafkastatus_tags

What Tansu (the Kafka-protocol broker the tests run) lacks is shown on the pages as
"not supported by this broker".
"""
