// Package cluster is difftrain's membership and ring agreement: who is in
// the cluster (gossip through hashicorp/memberlist), which members train
// together (numbered generations agreed by a two-phase protocol over gRPC),
// and who may talk to whom (the cluster secret and optional mutual TLS).
// It knows nothing about training; the node package drives it.
//
// # Membership
//
// Each process is a member with a unique name (a prefix, by default the host
// name, plus a random suffix, so a restarted pod is a new member). It gossips
// a small versioned binary metadata record (Meta): its gRPC address, state
// (joining, ready, training, leaving), the generation it belongs to, backend,
// data set and build version. Join retries the seeds with backoff until a
// timeout. Members that vanish without leaving are redialled periodically so
// that a healed partition merges again. Close leaves gracefully.
//
// # Generations
//
// A generation g is an ordered ring of members (sorted by name) and the step
// it starts from. Every allreduce message carries g; a member only takes
// part in the generation it committed last, so a ring can finish a step only
// when all of its members committed that very generation.
//
// The coordinator is, among the live members that are ready or training and
// belong to the highest generation any of them belongs to (as gossiped), the
// one with the lowest name. When a coordinator dies the rule picks the next.
// Two members may briefly both believe they coordinate; the protocol below
// stays safe, one of them just fails a round.
//
// The coordinator checks the ring on every tick and membership event. It
// proposes a new generation when the ring it wants differs from the current
// one (a member died, left or was reported failed; a ready joiner fits under
// MaxNodes) or when a step of the current generation was reported failed:
//
//  1. Propose(id, base, ring) to every member of the new ring, where base is
//     the latest generation the coordinator knows and id is above every
//     number it has seen. A member refuses if it already promised an id as
//     high, or knows a generation newer than base (it then returns that
//     generation so the coordinator catches up). Otherwise it promises id,
//     interrupts the step its node is running (Interrupt), waits until the
//     node is at a step boundary, and acknowledges with that boundary: the
//     number of steps it has completed.
//  2. If every member acknowledged, Commit(generation) to all, with Start =
//     the largest boundary acknowledged by members of the base generation
//     (by all members for the first generation) and each member's own
//     boundary and Fresh flag (not in base). A member accepts a commit only
//     for the id it promised last. Members behind Start, and Fresh ones, take
//     state from a member at Start before training: a step one member
//     completed while others aborted it is neither lost nor counted twice.
//
// A member that acknowledged stops training until the commit arrives. When
// phase one fails (a member refused or did not answer), the coordinator
// sends Abort to those that acknowledged, and they resume. If neither
// commit nor abort comes within the pending timeout (the coordinator died)
// the member resumes its generation; should that ring be broken, the next
// failure report or membership change starts a new round. Members that fail
// to answer are kept out of new rings for a penalty period.
//
// Quorum: a new ring must hold a majority of the base generation's members
// and at least MinNodes members. Members that announced a graceful leave
// are not counted (they refuse every proposal from then on, so they can be
// in no rival ring); a pair can thus shrink to one by a leave, not by a
// crash. Two rings built on the same base therefore
// share a member, which commits only one of them, so a partition never
// yields two rings training diverging replicas. The minority side cannot
// form a generation and waits; when the partition heals its members are
// ready non-members of the majority's generation and join its next one as
// joiners. A first generation needs only MinNodes members, so set MinNodes
// to a majority of the nodes started, or nodes started apart could each form
// one. Generation numbers are unique per base; gaps are normal.
//
// # The node's side
//
//	c, _ := cluster.New(cfg)     // binds the gossip port
//	c.Register(grpcServer)       // on a server built with ServerOptions(sec)
//	c.Join(ctx); c.SetReady()
//	gen, _ := c.WaitGeneration(ctx, 0)
//	step := gen.Start
//	for {
//		g, _ := c.AtStep(ctx, step) // blocks while a change is pending
//		if g.ID != gen.ID {
//			gen = g
//			if me := g.Ring[g.Rank(c.Name())]; step != g.Start || me.Fresh {
//				// take the state at g.Start from a member with
//				// Step == g.Start that is not Fresh
//				step = g.Start
//				continue
//			}
//		}
//		if err := runStep(gen, step, c.Interrupt()); err != nil {
//			if !interrupted {
//				c.ReportFailure(gen.ID, peer, err)
//			}
//			continue // AtStep(step) again: the step is redone
//		}
//		step++
//		c.SetStatus(cluster.StatusInfo{Step: step, Loss: loss, TokensPerSec: tps})
//	}
//
// AtStep blocks while this member is in no generation (for example on the
// minority side of a partition), so the same loop pauses and resumes.
//
// # Security
//
// With a cluster secret, gossip is encrypted and authenticated with
// memberlist's keyring (AES-256-GCM; the key is HKDF-SHA256 of the secret),
// so a process without it can neither join nor read the gossip. Every gRPC
// call of every service on the node's server carries a token: time, random
// nonce and HMAC-SHA256 (a second key derived from the secret) of method,
// time and nonce; the server checks it in constant time, within a one-minute
// window, refuses replays, and logs refusals with the peer address. With
// certificate files, connections also use mutual TLS against the cluster CA.
package cluster
