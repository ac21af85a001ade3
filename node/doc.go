// Package node is one worker of a training run: the step loop over the
// ring's generations, elastic retry of a failed step, state transfer to
// joiners, checkpoint policy, metrics (Prometheus, metrics.jsonl, progress)
// and the health endpoints. It wires the cluster, allreduce, dataset,
// checkpoint and train packages together; it knows none of their wire
// formats.
package node
