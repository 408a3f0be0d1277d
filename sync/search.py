"""Finding people on the Records page the way people search for them: by surname, by first name, by full
name in either order, without accents or case ("garcia maria" finds María García, "nowak" finds Nowak), and
by what the hub itself keys on: the exact external id, the start of a username or an email.

How PostgreSQL answers it, at a million records
-----------------------------------------------
A search is a union of one small look-up per way of matching, each through its own index, each stopped
at COUNT_CAP + 1 rows; the list then shows those ids newest first. Written as one OR under the list's
`ORDER BY id DESC LIMIT 50`, PostgreSQL walks the primary key backwards testing every row until it has
50 matches: instant for a common name, a whole-table scan (0.6 s) for a rare one, which is what people
search for.

- external id: `external_id = q`, btree record_external_id.
- username, email: `UPPER(col) LIKE UPPER('q%')`, the text_pattern_ops indexes of migration 0007.
- name: `to_tsvector('simple', sync_search_fold(display_name)) @@ 'garcia':* & 'maria':*`, the GIN index
  record_name_words of migration 0016. A prefix query on the lexemes of a full-text index is "a word
  starting with each term, in any order". The query side is folded by the same SQL function with a
  constant argument, so the planner evaluates it once and hands the index a constant tsquery; its
  statistics on the indexed expression tell a rare surname (bitmap index scan) from "a" (any plan
  reading the first 10,001 rows is as good).

No stored search column: the index is on an expression of display_name, so every way a record is
written (save, bulk_create, sync.bulk's COPY and UPDATE ... FROM unnest) keeps it current, with nothing
to remember to fill in. The expression below must stay identical to the index's, or the planner falls
back to a sequential scan; test_record_search checks the plan.
"""

from __future__ import annotations

import re
import unicodedata

from django.db.models import BooleanField, Expression, F, Q, QuerySet, Value

from web.pages import COUNT_CAP

# What a search looks in, as the empty list says it.
SEARCHED_FIELDS = "first name, surname, full name, username, email or external id"
# More words than a name has only make the query longer; the extra ones are ignored.
MAX_NAME_WORDS = 6
# Letters and digits: the characters that can start a word in the name index. Anything else (spaces,
# hyphens, apostrophes, dots, tsquery operators and quotes) separates words.
_WORD = re.compile(r"[^\W_]+")


def matching_ids(records: QuerySet, text: str) -> list[int]:
    """The ids of the records a search text matches, among `records` (already narrowed by the other
    filters, so that the COUNT_CAP limit of each look-up applies to the right site and status)."""
    text = text.strip()
    ways = [Q(external_id=text), Q(username__istartswith=text), Q(email__istartswith=text)]
    if words := name_words(text):
        ways.append(Q(NameHasWords(F("display_name"), words)))
    first, *rest = [
        # One more than the lists count to: past it, the list says "10,000+" as for any long list.
        records.filter(way).order_by().values_list("pk", flat=True)[: COUNT_CAP + 1]
        for way in ways
    ]
    return list(first.union(*rest))


def name_words(text: str) -> list[str]:
    """The words of a search text, as the name index splits a name: "García-López, M." gives García,
    López, M. NFKC first, so that a decomposed accent or a ligature stays inside its word."""
    return _WORD.findall(unicodedata.normalize("NFKC", text))[:MAX_NAME_WORDS]


class NameHasWords(Expression):
    """True when a name has a word starting with each of `words`, in any order, ignoring accents and case:
    the expression the GIN index record_name_words (migration 0016) serves."""

    output_field = BooleanField()

    def __init__(self, name: Expression, words: list[str]) -> None:
        super().__init__()
        # Each word holds only letters and digits (name_words), so quoting it cannot break the tsquery.
        self.name = name
        self.query = Value(" & ".join(f"'{word}':*" for word in words))

    def get_source_expressions(self) -> list[Expression]:
        return [self.name, self.query]

    def set_source_expressions(self, exprs: list[Expression]) -> None:
        self.name, self.query = exprs

    def as_sql(self, compiler, connection) -> tuple[str, list]:
        name, name_params = compiler.compile(self.name)
        query, query_params = compiler.compile(self.query)
        sql = (
            f"to_tsvector('simple'::regconfig, sync_search_fold({name})) "
            f"@@ to_tsquery('simple'::regconfig, sync_search_fold({query}))"
        )
        return sql, [*name_params, *query_params]
