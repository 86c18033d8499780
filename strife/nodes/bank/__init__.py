"""The bank: an SQLite ledger of accounts and holds, served to the gateway as a 2PC participant."""
