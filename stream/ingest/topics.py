"""The worker's topics, created explicitly (the broker would otherwise auto-create them with its own defaults)."""

from __future__ import annotations


def create_topics(
    bootstrap: str | list[str], names: list[str], partitions: int, timeout: float = 20, **client_options
) -> None:
    """Create the topics explicitly (the broker would otherwise auto-create them with its own defaults)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    client_options.setdefault("bootstrap_timeout_ms", int(timeout * 1000))
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sentiment-admin", **client_options)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names if n not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
