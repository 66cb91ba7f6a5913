"""Operator verbs: offline kits, replay, retention, compaction, doctor, receipts, facts."""
