"""The exported Keras model's arithmetic, compiled with numba, for scoring many reviews fast.

The model stays the one Keras model trained by ``training/``; this package reads its weights and vocabulary and
computes the same function without TensorFlow:

- the model's cleaning pass for pass on code points: ``model.cleaning.clean_text`` or ``clean_tokens`` (Python's
  ``str.lower`` first), or Keras' own ``lower_and_strip_punctuation`` (``cleaning = "basic"``: ASCII lowercased).
  Where Python and TensorFlow could disagree (which characters are letters or digits in each one's Unicode tables, which ones
  ``tf.strings.lower`` lowercases, that it stops at a NUL), the tables are measured from the installed TensorFlow
  when the tables are built, so the two cannot drift apart;
- each word gets a number from a hash table, each n-gram one 64-bit key packed from its words' numbers, looked up in
  a second hash table;
- the masked average of the embedding rows (the known n-grams'; and the [UNK] row for each unknown one when the model
  has no ``ForgetUnknown`` layer, trained with ``mask_unknown = false``), then the two dense layers in numpy.

Scores equal the TensorFlow model's within 1e-5 (tests/test_compiled_scoring.py: every ``imdb_test`` review and
hostile text: every script, emoji, NUL, control characters, 100k-character texts), for every config the trainer
accepts (tests/test_config_space.py). The compiled part runs without the GIL, so a thread can score while the event
loop runs, and spreads a batch's texts over ``threads`` cores (``SENTIMENT_SCORING_THREADS``; each text is scored by
one thread, so results do not depend on it).

    kernels.py   the numba code: cleaning, n-gram ids and scoring on arrays (no TensorFlow)
    tables.py    FastModel: the tables built from the model's vocabulary and weights, batch scoring, and what
                 ``model.explain`` reads: one text's n-gram ids, embedding rows, the head's gradient (no TensorFlow)
    cache.py     the tables on disk, read without TensorFlow
    build.py     reading the Keras model, checking the tables against TensorFlow, keeping them
    __main__.py  ``python -m model.compiled MODEL_FILE CACHE_DIR``: build, check and keep (a child process, the image)
"""
