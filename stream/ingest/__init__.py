"""Reviews in, results out: Faust's consumer as the worker needs it, a micro-batch decoded, checked and scored,
then stored, published, acked and committed (retried when the database or the broker falters), and the topics."""
