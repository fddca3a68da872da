"""Creates or updates a SCRAM user on a Kafka broker (AlterUserScramCredentials, KIP-554) with
confluent-kafka's AdminClient, for kedge's SASL login test.

    scram_user.py BOOTSTRAP USER PASSWORD MECHANISM...   (SCRAM-SHA-256 and/or SCRAM-SHA-512)

Exits non-zero with the broker's error if any upsert fails.
"""

import os
import sys

from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

MECHANISMS = {
    "SCRAM-SHA-256": ScramMechanism.SCRAM_SHA_256,
    "SCRAM-SHA-512": ScramMechanism.SCRAM_SHA_512,
}


def main():
    bootstrap, user, password, *mechanisms = sys.argv[1:]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    upserts = [
        UserScramCredentialUpsertion(
            user,
            ScramCredentialInfo(MECHANISMS[m], 4096),
            password.encode(),
            os.urandom(16),
        )
        for m in mechanisms
    ]
    for name, future in admin.alter_user_scram_credentials(upserts).items():
        future.result(timeout=30)
        print(f"scram_user: {name} upserted ({', '.join(mechanisms)})", file=sys.stderr)


if __name__ == "__main__":
    main()
