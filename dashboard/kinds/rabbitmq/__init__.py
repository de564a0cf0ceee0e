"""RabbitMQ on the Django side: queues and streams, exchanges, dead-letter queues and replays
through AMQP (brokers/rabbitmq/ talks to the management API and AMQP).

    kind         `RabbitMQ`, the Kind: what kind-neutral code asks of RabbitMQ
    urls         its pages and JSON endpoints, mounted by dashboard/urls.py
    jobs         replay, move and discard from a queue: checks, preview, routing, the transfer
    deadletters  which queues hold dead letters, and what x-death says of a death
    views/       messages, publish, exchanges and the dead-letters page's part
    templates/   dashboard/rabbitmq/*.html
"""
