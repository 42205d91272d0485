class PostgresJournal: pass
