"""Bank transfers to the seller's own account: payment references, IBAN/BIC, EPC QR codes, CAMT.053 statements.

Pure building blocks with no database and no web layer; see docs/banking.md.
"""
