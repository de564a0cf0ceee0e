"""RabbitMQ: the management and Prometheus plugins for monitoring, AMQP 0-9-1 (pika) for messages.

Talks to the Prometheus plugin's detailed endpoint (`prometheus_url`) for the counts
when it answers, to the management API (`management_url`) for the rest (or for
everything, 3 + ceil(queues / 500) requests a collection), and to the AMQP port
(`amqp_url`) only to browse, publish and move messages. Options and costs are in
`adapter`'s docstring.

    adapter      the `RabbitMQ` adapter: the connection, and each capability
    monitor      one collection: overview, nodes, queues, consumers, exchanges, bindings
    management   the HTTP session, with every failure as a BrokerError
    prometheus   the Prometheus plugin's detailed endpoint, and a parser for its text
    keys         destination keys and publish targets ("<vhost>/<name>") split back
    amqp         the AMQP side's entry points, imported on first use
    wire         connections and channels; codec: properties and field tables
    browse       reading a queue's head (or a stream's offset) and leaving it there
    publish      confirmed, mandatory publishing; routing: where a message would go
    deadletters  one reading of the x-death header, for the pages and the replay
    transfer     moving messages: confirm the copy, then acknowledge the original
    messages     the project's Message from AMQP deliveries
    internals    the pika internals these use, why, and the versions checked

Importing this package imports nothing of pika; the modules do.
"""
