import { createRecurClient, Outcome } from "@recur/client/node";
const recur = createRecurClient({ baseUrl: process.env.RECUR_SERVER ?? "127.0.0.1:50051" });
const task = await recur.registerTask({ spec: {
  schedule: { cadence: { case: "every", value: { seconds: 2n } } },
  action: { kind: { case: "http", value: { url: process.env.RECUR_TARGET ?? "http://127.0.0.1:8080/" } } } } });
console.log(`registered ${task.taskId}: ${task.scheduleDescription}`);
for await (const result of recur.streamResults({ taskIds: [task.taskId] })) {
  console.log(`run ${result.run}: ${Outcome[result.outcome]}`); break;
}
await recur.cancelTask({ taskId: task.taskId });
