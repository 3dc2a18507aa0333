package upload

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/store"
	"github.com/ferryhq/ferry/store/diskstore"
)

// gzipBytes returns b compressed with gzip.
func gzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// envelope frames payload as one enveloped message with flags.
func envelope(flags byte, payload []byte) []byte {
	return append(binary.BigEndian.AppendUint32([]byte{flags}, uint32(len(payload))), payload...)
}

// TestLimitCompressedUploads: uploads whose every message is gzipped, as
// grpc-go with UseCompressor(gzip), grpc-js and connect-es with
// compressMinBytes 0 send them, go through an idle server over every
// protocol, streamed and unary, one chunk and several: the limiter
// inflates each message itself and counts what it really holds, so a
// compressed chunk kept while its finish is read does not weigh the whole
// read limit twice.
func TestLimitCompressedUploads(t *testing.T) {
	t.Parallel()
	disk, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, lim, url := serveLimited(t, disk, Limits{MaxInflightBytes: 12 * mib, Wait: time.Minute})
	ctx := t.Context()
	h2c := newH2CClient()
	random, zeros := svcData(11, mib), make([]byte, 5*mib)
	for proto, opts := range svcProtocols {
		c := ferryv1connect.NewUploadServiceClient(h2c, url, append(opts, connect.WithSendGzip(), connect.WithCompressMinBytes(0))...)
		// Incompressible data in one request, compressible data in chunks.
		crc := store.CRC32C(random)
		res, err := streamUpload(ctx, c,
			createMsg(&ferryv1.UploadSpec{Key: proto + "/oneshot", Size: ptr(int64(len(random)))}),
			chunkMsg(svcChunk(0, random)),
			finishMsg(ptr(int64(len(random))), &crc))
		if err != nil {
			t.Errorf("%s: a gzipped one-request upload: %v", proto, err)
		} else if res.GetObject().GetCrc32C() != crc {
			t.Errorf("%s: stored crc32c %08x, want %08x", proto, res.GetObject().GetCrc32C(), crc)
		}
		// Two chunks by PutChunk (unary: Connect compresses the whole body),
		// completed by a gzipped CompleteUpload.
		both := append(append([]byte(nil), zeros...), random...)
		created, err := c.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: proto + "/chunks", Size: ptr(int64(len(both))), ChunkSize: 5 * mib}}))
		if err != nil {
			t.Fatalf("%s: CreateUpload: %v", proto, err)
		}
		id := created.Msg.GetUpload().GetUploadId()
		for _, ch := range chunksOf(both, 5*mib) {
			if _, err := c.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: ch})); err != nil {
				t.Fatalf("%s: gzipped PutChunk %d: %v", proto, ch.GetIndex(), err)
			}
		}
		all := store.CRC32C(both)
		if _, err := c.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: id, Crc32C: &all})); err != nil {
			t.Errorf("%s: CompleteUpload: %v", proto, err)
		}
	}
	if st, _ := lim.budget.state(); st.used != 0 || st.peak > 12*mib {
		t.Errorf("budget after the uploads: %+v, want nothing used and a peak within 12 MiB", st)
	}
}

// TestLimitDecompressionBomb: a small gzipped message that inflates past
// its procedure's read limit is refused with RESOURCE_EXHAUSTED once the
// inflated bytes pass the limit, for chunk messages (Upload, PutChunk),
// control messages and unary Connect bodies, and the budget never held
// more than the limit and the compressed bytes.
func TestLimitDecompressionBomb(t *testing.T) {
	t.Parallel()
	disk, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bomb := gzipBytes(t, make([]byte, 64*mib)) // about 64 KiB
	small := gzipBytes(t, make([]byte, mib))   // over the 64 KiB of control messages
	header, err := proto.Marshal(createMsg(&ferryv1.UploadSpec{Key: "bomb", Size: ptr(int64(5 * mib))}))
	if err != nil {
		t.Fatal(err)
	}
	gz := http.Header{"Grpc-Encoding": {"gzip"}}
	for _, c := range []struct {
		name, procedure string
		body            []byte
		limit           int64
	}{
		{"upload", ferryv1connect.UploadServiceUploadProcedure, append(envelope(0, header), envelope(1, bomb)...), testDataLimit},
		{"putchunk", ferryv1connect.UploadServicePutChunkProcedure, envelope(1, bomb), testDataLimit},
		{"control", ferryv1connect.UploadServiceGetUploadProcedure, envelope(1, small), 64 << 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, lim, url := serveLimited(t, disk, Limits{MaxInflightBytes: 20 * mib, Wait: time.Minute})
			status, msg := rawGRPC(t, url, c.procedure, gz, c.body, false)
			if status != strconv.Itoa(int(connect.CodeResourceExhausted)) || !strings.Contains(msg, "once decompressed") {
				t.Errorf("grpc-status %s %q, want %d, larger once decompressed", status, msg, connect.CodeResourceExhausted)
			}
			st, _ := lim.budget.state()
			if bound := c.limit + int64(len(c.body)) + maxRead; st.peak > bound {
				t.Errorf("the budget held %d bytes, more than the limit, the compressed bytes and one read (%d)", st.peak, bound)
			}
		})
	}
	t.Run("connect-unary", func(t *testing.T) {
		_, lim, url := serveLimited(t, disk, Limits{MaxInflightBytes: 20 * mib, Wait: time.Minute})
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url+ferryv1connect.UploadServicePutChunkProcedure, bytes.NewReader(bomb))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/proto")
		req.Header.Set("Content-Encoding", "gzip")
		res, err := newH2CClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "once decompressed") {
			t.Errorf("unary Connect bomb: HTTP %d %s, want 429 resource_exhausted, larger once decompressed", res.StatusCode, body)
		}
		if st, _ := lim.budget.state(); st.peak > testDataLimit+int64(len(bomb))+maxRead {
			t.Errorf("the budget held %d bytes", st.peak)
		}
	})
}

// TestLimitTrickle: a client that declares a 5 MiB chunk and then trickles
// holds only what it has sent and MaxAheadBytes (here 1 MiB), not the 5 MiB
// it announced, so another upload that needs most of the budget goes
// through beside it.
func TestLimitTrickle(t *testing.T) {
	t.Parallel()
	disk, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	clients, lim, url := serveLimited(t, disk, Limits{MaxInflightBytes: 7 * mib, MaxAheadBytes: mib, Wait: time.Minute})
	ctx := t.Context()
	c := clients["grpc"]
	created, err := c.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: "trickle", Size: ptr(int64(5 * mib))}}))
	if err != nil {
		t.Fatal(err)
	}
	header, _ := proto.Marshal(resumeMsg(created.Msg.GetUpload().GetUploadId()))
	sent := append(envelope(0, header), binary.BigEndian.AppendUint32([]byte{0}, 5*mib+16)...)
	sent = append(sent, make([]byte, 1024)...)
	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+ferryv1connect.UploadServiceUploadProcedure, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	go func() {
		if res, err := newH2CClient().Do(req); err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	}()
	if _, err := pw.Write(sent); err != nil {
		t.Fatal(err)
	}
	waitState(t, lim.budget, "the trickled bytes to be read", func(s budgetState) bool { return s.used >= 1024 })
	if st, _ := lim.budget.state(); st.used > int64(len(sent))+mib {
		t.Errorf("a client that sent %d bytes holds %d of the budget, more than that and 1 MiB ahead", len(sent), st.used)
	}
	data := svcData(12, 5*mib)
	crc := store.CRC32C(data)
	if _, err := streamUpload(ctx, c,
		createMsg(&ferryv1.UploadSpec{Key: "beside", Size: ptr(int64(len(data)))}),
		chunkMsg(svcChunk(0, data)),
		finishMsg(ptr(int64(len(data))), &crc)); err != nil {
		t.Errorf("an upload of 5 MiB beside the trickling one, in a 7 MiB budget: %v", err)
	}
}

// TestLimitCompressedCountedOnce: a gzipped chunk costs the budget its
// inflated size once, not also its compressed size and connect-go's copy:
// with a budget of exactly the largest message, a one-request upload of a
// gzipped 5 MiB chunk of incompressible bytes (its compressed form is
// larger than the chunk), and a gzipped PutChunk of one, go through every
// protocol on an idle server. (Counted twice or three times, such a chunk
// could never fit, and its client would retry for ever.)
func TestLimitCompressedCountedOnce(t *testing.T) {
	t.Parallel()
	disk, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, lim, url := serveLimited(t, disk, Limits{MaxInflightBytes: testDataLimit, Wait: time.Minute})
	ctx := t.Context()
	data := svcData(31, 5*mib)
	crc := store.CRC32C(data)
	for proto, opts := range svcProtocols {
		c := ferryv1connect.NewUploadServiceClient(newH2CClient(), url, append(opts, connect.WithSendGzip(), connect.WithCompressMinBytes(0))...)
		if _, err := streamUpload(ctx, c,
			createMsg(&ferryv1.UploadSpec{Key: proto + "/whole", Size: ptr(int64(len(data)))}),
			chunkMsg(svcChunk(0, data)),
			finishMsg(ptr(int64(len(data))), &crc)); err != nil {
			t.Errorf("%s: a gzipped one-request upload of 5 MiB in a 6 MiB budget: %v", proto, err)
		}
		created, err := c.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: proto + "/put", Size: ptr(int64(len(data)))}}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: created.Msg.GetUpload().GetUploadId(), Chunk: svcChunk(0, data)})); err != nil {
			t.Errorf("%s: a gzipped PutChunk of 5 MiB in a 6 MiB budget: %v", proto, err)
		}
	}
	if st, _ := lim.budget.state(); st.peak > testDataLimit {
		t.Errorf("the budget's peak is %d bytes, over its %d", st.peak, testDataLimit)
	}
}
