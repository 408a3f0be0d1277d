"""Re-encrypt every stored service token with the first key in TOKEN_ENCRYPTION_KEYS."""

from django.core.management.base import BaseCommand
from django.db import transaction

from sync import crypto
from sync.models import ServiceToken

from ...words import counted


class Command(BaseCommand):
    help = "Re-encrypt all service tokens with the newest key (the first in TOKEN_ENCRYPTION_KEYS)."

    def handle(self, *args, **options):
        with transaction.atomic():
            tokens = list(ServiceToken.objects.select_for_update().only("pk", "token_encrypted"))
            for token in tokens:
                token.token_encrypted = crypto.reencrypt(token.token_encrypted)
            ServiceToken.objects.bulk_update(tokens, ["token_encrypted"], batch_size=500)
        self.stdout.write(
            f"Re-encrypted {counted(len(tokens), 'token')} with the first key; older keys can now go."
        )
