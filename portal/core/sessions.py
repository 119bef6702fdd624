"""Django's database sessions, the session row read by a prepared query.

Every signed-in request reads its session first, and Django compiles that
SQL afresh each time (portal/core/prepared.py says why that adds up). The
row is read by its key alone and its expiry compared here, which answers
what Django's `expire_date__gt=now()` does, with SQL that never changes.
Writing, cycling and clearing sessions are Django's own.
"""

from __future__ import annotations

from django.contrib.sessions.backends import db
from django.contrib.sessions.models import Session
from django.db.models import QuerySet
from django.utils import timezone

from portal.core.prepared import prepared


@prepared(session_key=str)
def _session_row(session_key: str) -> QuerySet:
    return Session.objects.filter(session_key=session_key)


class SessionStore(db.SessionStore):
    def _get_session_from_db(self) -> Session | None:
        # The key is None when the cookie held none or an invalid one (the
        # setter validates it): Django's lookup finds nothing for it either.
        session = _session_row.first(session_key=self.session_key) if self.session_key else None
        if session is None or session.expire_date <= timezone.now():
            self._session_key = None
            return None
        return session
