from model.cleaning import clean


def test_html_line_breaks_and_tags_are_removed():
    assert clean(["Great film.<br /><br />Really <i>great</i>!"]) == ["great film really great !"]


def test_negations_are_kept_as_words():
    assert clean(["I didn't like it, won't watch it, can't stand it, not good"]) == [
        "i did not like it will not watch it can not stand it not good"
    ]


def test_cp1252_control_characters_are_repaired():
    # the dataset holds Windows-1252 punctuation as C1 control characters
    assert clean(["It\x92s \x93fine\x94\x85 really\x97no"]) == ["its fine really no"]


def test_entities_emoji_and_other_scripts():
    assert clean(["Tom &amp; Jerry &lt;3 😀 Ünïcode 映画"]) == ["tom and jerry 3 ünïcode 映画"]


def test_empty_and_very_long_text():
    long = "good " * 20_000
    cleaned = clean(["", "   ", long])
    assert cleaned[:2] == ["", ""]
    assert cleaned[2] == long.strip()
