"""The name search of the Records page (sync/search.py): a GIN index over the words of display_name, folded
to lower case without accents, so that "nowak", "garcia maria" and "Maria García" all find María García.

PostgreSQL's `unaccent` and `pg_trgm` would be the usual tools, but they are contrib extensions, and the
embedded PostgreSQL of `make test` and `make demo` (pip `pgserver` 0.1.4) ships only plpgsql and vector:
a migration that creates them fails there. Everything here is core PostgreSQL.

`sync_search_fold()` decomposes the text (NFKD: "í" becomes "i" and a combining accent, the "ﬁ" ligature
becomes "fi"), drops the combining marks, lowers the case, and spells out the letters that carry their
stroke in the letter itself (ł, ø, đ, ı, ß, æ, œ, þ). All of it is IMMUTABLE, so it can stand in an index
expression. A name that is plain ASCII (octet length = character length) skips the decomposition: that
keeps each write of a record cheap (about 1 µs for ASCII, 13 µs otherwise).

The index is a full-text one ('simple' configuration: no stemming, no stop words, only lower-casing)
because its prefix queries ('garc':* & 'mar':*) are exactly "the start of any word, in any order".

What the function returns is frozen with the rows already indexed: to change it, write a new migration
that replaces the function and REINDEXes record_name_words.
"""

from django.db import migrations

_STROKED = ("łŁøØđĐðÐħĦıŧŦƒŀĿĸ", "llooddddhhittfllk")
_LIGATURES = {"ß": "ss", "ẞ": "ss", "æ": "ae", "Æ": "ae", "œ": "oe", "Œ": "oe", "þ": "th", "Þ": "th"}

_FOLDED = (
    "translate(lower(regexp_replace(normalize(value, NFKD), '[\\u0300-\\u036f]+', '', 'g')), "
    f"'{_STROKED[0]}', '{_STROKED[1]}')"
)
for _letter, _spelled in _LIGATURES.items():
    _FOLDED = f"replace({_FOLDED}, '{_letter}', '{_spelled}')"

CREATE_FUNCTION = f"""
CREATE FUNCTION sync_search_fold(value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN octet_length(value) = char_length(value) THEN lower(value) ELSE {_FOLDED} END
"""
# Must stay the very expression sync/search.py queries with, or the planner cannot use the index.
CREATE_INDEX = (
    "CREATE INDEX record_name_words ON sync_syncrecord "
    "USING gin (to_tsvector('simple'::regconfig, sync_search_fold(display_name)))"
)
# 0007's prefix index on UPPER(display_name): the word index above serves every name search now.
CREATE_NAME_PREFIX = (
    'CREATE INDEX record_name_prefix ON sync_syncrecord (UPPER(("display_name")::text) text_pattern_ops)'
)


class Migration(migrations.Migration):
    dependencies = [
        ("sync", "0015_run_site_finished_index"),
    ]

    operations = [
        migrations.RunSQL(CREATE_FUNCTION, reverse_sql="DROP FUNCTION sync_search_fold(text)"),
        migrations.RunSQL(CREATE_INDEX, reverse_sql="DROP INDEX record_name_words"),
        migrations.RunSQL("DROP INDEX record_name_prefix", reverse_sql=CREATE_NAME_PREFIX),
    ]
