package allreduce

import (
	"context"
	"fmt"
	"time"
)

// Pipe moves bytes as a ring step does, without the reduction: it sends
// total bytes to the member at right in data messages of chunk bytes of
// payload, while it receives as many messages from its left neighbour and
// drops them. Run on every member at once, it measures what the transport
// alone costs, the ceiling of any ring over it: `bench allreduce` runs it
// next to codec none, which moves the same bytes and adds its reduction.
//
// Messages carry generation gen and step; every member must use the same
// total and chunk. Heartbeats are dropped; any other message, or none from
// the left within deadline, is an error. The caller must not run a Reducer
// on t meanwhile (they share its inbox). It returns the message bytes it
// sent, headers included (as Stats.SentBytes counts them).
func Pipe(ctx context.Context, t Transport, right string, gen, step uint64, total, chunk int, deadline time.Duration) (uint64, error) {
	if chunk < 4 || total < 0 {
		return 0, fmt.Errorf("pipe: chunk of %d bytes, total %d", chunk, total)
	}
	msgs := (total + chunk - 1) / chunk
	link, err := t.Dial(ctx, right)
	if err != nil {
		return 0, fmt.Errorf("pipe: dial %s: %w", right, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sent := make(chan error, 1)
	go func() { sent <- pipeSend(ctx, link, gen, step, total, chunk) }()
	sending := sent // nil once the sender has finished
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	for got := 0; got < msgs; {
		timer.Reset(deadline)
		var f *Frame
		select {
		case f = <-t.Inbox():
		case err := <-sending:
			if err != nil {
				return 0, err
			}
			sending = nil
			continue
		case <-timer.C:
			return 0, fmt.Errorf("pipe: message %d of %d: none within %v", got, msgs, deadline)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if f.Err != nil {
			err := f.Err
			f.Release()
			return 0, fmt.Errorf("pipe: stream from %s: %w", f.Peer, err)
		}
		hb := f.header()
		h, _, err := decodeHeader(hb, f.Len()-len(hb))
		f.Release()
		switch {
		case err != nil:
			return 0, fmt.Errorf("pipe: %w", err)
		case h.kind == kindBeat:
			continue
		case h.kind != kindData || h.gen != gen || h.step != step:
			return 0, fmt.Errorf("pipe: unexpected message (kind %d, generation %d, step %d)", h.kind, h.gen, h.step)
		}
		got++
	}
	if sending != nil {
		if err := <-sending; err != nil {
			return 0, err
		}
	}
	return uint64(total + msgs*headerSize), nil
}

// pipeSend sends Pipe's messages: their payload is whatever the pooled
// frames hold, as the receiver never reads it.
func pipeSend(ctx context.Context, link Link, gen, step uint64, total, chunk int) error {
	var pool Pool
	none, err := codecByName(CodecNone)
	if err != nil {
		return err
	}
	h := header{kind: kindData, codec: none.id, gen: gen, step: step}
	for i, off := 0, 0; off < total; i, off = i+1, off+chunk {
		size := min(chunk, total-off)
		f := pool.Get(headerSize + size)
		h.chunk, h.count = uint32(i), uint32(size/4)
		h.put(f.Buf, f.Buf[headerSize:])
		if err := link.Send(ctx, f); err != nil {
			return fmt.Errorf("pipe: send: %w", err)
		}
	}
	return nil
}
