"""File-transfer protocols followed from their bytes: legacy scp (the command and its
stream) and SFTP (its packets), with digests of the bytes actually moved. Pure: no I/O;
whoever relays a transfer feeds them."""
