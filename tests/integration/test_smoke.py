import httpx


async def test_enqueue_and_get(live_server):
    async with httpx.AsyncClient(base_url=live_server.url) as client:
        headers = {"Authorization": "Bearer tok-acme"}
        r = await client.post(
            "/v1/jobs",
            json={"use_case": "labeling", "job_type": "x", "payload": {"a": 1}, "dedup_key": "k"},
            headers=headers,
        )
        assert r.status_code == 201, r.text
        job = r.json()["job"]
        r = await client.get(f"/v1/jobs/{job['id']}", headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "pending"
