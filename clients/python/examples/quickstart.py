import os
from datetime import timedelta
from recur_client import Client, Outcome

url = os.environ.get("RECUR_TARGET_URL", "http://127.0.0.1:8080/")  # something to GET
with Client(os.environ.get("RECUR_SERVER", "127.0.0.1:50051")) as recur:
    task = recur.register("quickstart", every=timedelta(seconds=1), http_url=url)
    print(task.task_id, task.schedule_description, "next at", task.next_run_at.ToJsonString())
    for result in recur.results(["quickstart"]):  # live results, resumed if the stream drops
        print(f"run {result.run}: {Outcome.Name(result.outcome)} HTTP {result.http_status}")
        if result.run >= 3:
            break
    recur.cancel("quickstart")
    recur.delete("quickstart")
