def test_put_get(tenant):
    r = tenant.put_invoice()
    assert r.status_code == 201, r.text
    r2 = tenant.put_invoice()
    assert r2.json()["result"] == "unchanged", r2.text
    r3 = tenant.client.get("/api/v1/invoices/INV-1")
    assert r3.status_code == 200, r3.text
    print(r3.json())
