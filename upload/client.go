package upload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/cenkalti/backoff/v5"
	"golang.org/x/sync/errgroup"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/proto/wire"
	"github.com/ferryhq/ferry/store"
)

// ErrObjectMismatch is wrapped by the error an [Uploader] returns when the
// object the server reports after completion differs in size or CRC32C from
// the data the Uploader sent. The object is stored but is not what was
// meant: the caller should treat the upload as failed.
var ErrObjectMismatch = errors.New("stored object differs from the data sent")

// UploaderOptions configure an [Uploader]. The zero value is ready to use.
type UploaderOptions struct {
	// ChunkSize is the chunk size in bytes asked for when an upload is
	// created. 0 (the default) lets the server choose: 7 MiB unless it is
	// configured otherwise, more when the object would need over 10,000
	// chunks. Otherwise it must be at least 5 MiB (S3's smallest part) unless
	// the object fits in one chunk, and at most the server's maximum (64 MiB
	// by default); the server refuses other values with INVALID_ARGUMENT.
	ChunkSize int64

	// Concurrency is the number of chunks in flight at once: parallel Upload
	// streams for [Uploader.Upload] and [Uploader.Resume], parallel PutChunk
	// calls for [Uploader.UploadStream]. It also bounds memory: one upload
	// holds at most Concurrency chunk buffers. 0 means 4.
	Concurrency int

	// Retry says when and how long to wait before trying a call or stream
	// again after a transient failure ([IsTransient]). A stream that
	// committed chunks before it broke starts the count of attempts again.
	Retry RetryPolicy

	// Progress, when set, is called each time a chunk is sent or found
	// already committed, with the bytes done so far and the object's size in
	// bytes (-1 while the size is unknown). Calls are serialized. done
	// decreases after a broken stream by the bytes of the chunks that were in
	// flight and must be sent again.
	Progress func(done, total int64)

	// Created, when set, is called with the upload ID as soon as an upload
	// is created with CreateUpload (every upload of more than one chunk, and
	// one-chunk uploads with IfNoneMatch), before any chunk is sent, so that
	// a caller can record it and [Uploader.Resume] the upload even after its
	// own process was killed. Other one-chunk uploads go in a single stream
	// and have nothing to resume.
	Created func(uploadID string)
}

// ObjectOptions are the attributes of the object an upload creates.
type ObjectOptions struct {
	// ContentType is the object's MIME type; empty means
	// application/octet-stream.
	ContentType string
	// Metadata is user metadata stored with the object (S3 x-amz-meta-*):
	// keys of lower-case letters, digits and '-', at most 2 KiB in all.
	Metadata map[string]string
	// IfNoneMatch makes completion fail with ALREADY_EXISTS when an object
	// already has the key (S3 If-None-Match: *).
	IfNoneMatch bool
}

// InterruptedError is returned when an upload was created but not
// completed. The server keeps its committed chunks until the upload expires
// (after 24 hours without activity by default): [Uploader.Resume] with
// UploadID and the same data sends only the chunks that are missing.
type InterruptedError struct {
	// UploadID names the open upload.
	UploadID string
	// Err is why the upload stopped.
	Err error
}

// Error implements error.
func (e *InterruptedError) Error() string {
	return fmt.Sprintf("upload %s interrupted: %v", e.UploadID, e.Err)
}

// Unwrap returns e.Err, so [connect.CodeOf] and [errors.Is] see through e.
func (e *InterruptedError) Unwrap() error { return e.Err }

// Uploader writes objects through an UploadService: files in parallel
// chunks over several Upload streams, streams of unknown length in
// sequence, resuming after failures so that at most the chunks in flight
// when a stream broke are sent again. It is safe for concurrent use.
type Uploader struct {
	client ferryv1connect.UploadServiceClient
	opts   UploaderOptions
	// buffers holds *[]byte chunk buffers for reuse across uploads, and
	// across the Uploaders [Uploader.WithProgress] derives.
	buffers *sync.Pool
}

// NewUploader returns an Uploader that calls client with opts.
func NewUploader(client ferryv1connect.UploadServiceClient, opts UploaderOptions) *Uploader {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 4
	}
	return &Uploader{client: client, opts: opts, buffers: new(sync.Pool)}
}

// WithProgress returns an Uploader like u that reports progress to fn
// instead (see [UploaderOptions.Progress]; nil reports none). The two share
// their chunk buffers, so a caller that moves many files at once, each with
// its own progress display, holds no more memory than with one Uploader.
func (u *Uploader) WithProgress(fn func(done, total int64)) *Uploader {
	opts := u.opts
	opts.Progress = fn
	return &Uploader{client: u.client, opts: opts, buffers: u.buffers}
}

// Upload writes size bytes read from r as the object key and returns the
// stored object, verified to have the size and CRC32C of the data sent.
//
// An object that fits in one chunk goes in one Upload stream that creates,
// writes and completes the upload, unless opts.IfNoneMatch is set: such a
// stream cannot be retried idempotently (sent again after its answer was
// lost, it would meet the object it stored and fail with ALREADY_EXISTS),
// so an IfNoneMatch upload of any size goes the way of a larger one, whose
// retries are answered by upload ID. A larger one is created with
// CreateUpload, its chunks are read from r and sent over Concurrency
// parallel Upload streams, and it is completed with CompleteUpload and the
// whole-object CRC32C, combined from the chunks' CRC32Cs. A stream that
// breaks is reopened after a backoff and sends again only the chunks it had
// sent that GetUpload does not report committed. When the upload cannot be
// completed the error is an [*InterruptedError] naming the upload to
// [Uploader.Resume].
func (u *Uploader) Upload(ctx context.Context, key string, r io.ReaderAt, size int64, opts ObjectOptions) (*ferryv1.Object, error) {
	if size < 0 {
		return nil, fmt.Errorf("upload %q: negative size %d", key, size)
	}
	if u.fitsOneChunk(size) && !opts.IfNoneMatch {
		buf := u.buffer(size)
		defer u.buffers.Put(buf)
		data := (*buf)[:size]
		if err := readFullAt(r, data, 0); err != nil {
			return nil, fmt.Errorf("upload %q: %w", key, err)
		}
		return u.uploadOneChunk(ctx, key, data, opts)
	}
	spec := u.spec(key, opts)
	spec.Size = &size
	info, err := u.create(ctx, spec)
	if err != nil {
		return nil, err
	}
	return u.finish(ctx, info, r, size, nil)
}

// Resume continues the open upload uploadID with the same data it was
// started with: size bytes read from r. It reads every chunk of r once, to
// compute the whole-object CRC32C and to find chunks that differ from the
// committed ones, but sends only the chunks that are not committed or whose
// committed CRC32C differs; then it completes the upload and verifies the
// stored object. The upload's chunk size and key are the ones it was
// created with. When the upload cannot be completed the error is an
// [*InterruptedError]. An upload found completed already (its completion's
// answer was lost, or the process that sent it was killed) sends nothing:
// r is read to check that it is the object stored, which is returned, or
// the error wraps [ErrObjectMismatch].
func (u *Uploader) Resume(ctx context.Context, uploadID string, r io.ReaderAt, size int64) (*ferryv1.Object, error) {
	info, committed, obj, err := u.status(ctx, uploadID)
	if err != nil {
		return nil, err
	}
	if s := info.GetSpec().Size; s != nil && *s != size {
		return nil, fmt.Errorf("resume upload %s: the upload was created for %d bytes, not %d", uploadID, *s, size)
	}
	if obj != nil {
		return u.verifyCompleted(uploadID, obj, r, size)
	}
	return u.finish(ctx, info, r, size, committed)
}

// verifyCompleted checks that the object obj, which the completed upload
// uploadID stored, holds the size bytes of r, and returns it.
func (u *Uploader) verifyCompleted(uploadID string, obj *ferryv1.Object, r io.ReaderAt, size int64) (*ferryv1.Object, error) {
	progress := u.progress(size)
	buf := u.buffer(min(size, 1<<20))
	defer u.buffers.Put(buf)
	var crc uint32
	for off := int64(0); off < size; {
		b := (*buf)[:min(int64(len(*buf)), size-off)]
		if err := readFullAt(r, b, off); err != nil {
			return nil, fmt.Errorf("resume upload %s: %w", uploadID, err)
		}
		crc = crc32.Update(crc, store.Castagnoli, b)
		off += int64(len(b))
		progress.Add(int64(len(b)))
	}
	if err := verifyUploadedObject(obj, size, crc); err != nil {
		return nil, fmt.Errorf("resume upload %s, completed already: %w", uploadID, err)
	}
	return obj, nil
}

// UploadStream writes everything read from r, of unknown length, as the
// object key and returns the stored object, verified to have the size and
// CRC32C of the data sent. Input of at most 5 MiB goes in one Upload stream
// like [Uploader.Upload]. Longer input is read in sequence into chunks; up
// to Concurrency chunks are sent at once, each by a PutChunk call that the
// server answers once the chunk is committed, so a chunk's buffer is reused
// only after that and memory stays at Concurrency chunks for input of any
// length. The size and whole-object CRC32C are given at completion. A
// failed call is retried with the chunk still in memory; when the upload
// cannot be completed the error is an [*InterruptedError] (r cannot be read
// again, but the same data from elsewhere can be given to
// [Uploader.Resume]).
func (u *Uploader) UploadStream(ctx context.Context, key string, r io.Reader, opts ObjectOptions) (*ferryv1.Object, error) {
	head := make([]byte, store.MinPartSize+1)
	n, err := io.ReadFull(r, head)
	switch {
	case (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) && opts.IfNoneMatch:
		return u.Upload(ctx, key, bytes.NewReader(head[:n]), int64(n), opts) // see Upload
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return u.uploadOneChunk(ctx, key, head[:n], opts)
	case err != nil:
		return nil, fmt.Errorf("upload %q: read: %w", key, err)
	}
	info, err := u.create(ctx, u.spec(key, opts))
	if err != nil {
		return nil, err
	}
	obj, err := u.putChunks(ctx, info, io.MultiReader(bytes.NewReader(head), r))
	if err != nil {
		return nil, &InterruptedError{UploadID: info.GetUploadId(), Err: err}
	}
	return obj, nil
}

// fitsOneChunk reports whether an object of size bytes is surely one chunk:
// no server chooses a chunk size under S3's 5 MiB minimum part size, and a
// chunk size the caller asked for is the one in effect.
func (u *Uploader) fitsOneChunk(size int64) bool {
	return size <= store.MinPartSize || (u.opts.ChunkSize > 0 && size <= u.opts.ChunkSize)
}

func (u *Uploader) spec(key string, opts ObjectOptions) *ferryv1.UploadSpec {
	return &ferryv1.UploadSpec{
		Key:         key,
		ContentType: opts.ContentType,
		Metadata:    opts.Metadata,
		ChunkSize:   u.opts.ChunkSize,
		IfNoneMatch: opts.IfNoneMatch,
	}
}

// uploadOneChunk writes data as a one-chunk object in one stream: header
// with the spec, the chunk, finish. A transient failure starts over with a
// new upload (the abandoned one expires); what is sent again is the one
// chunk that was in flight.
func (u *Uploader) uploadOneChunk(ctx context.Context, key string, data []byte, opts ObjectOptions) (*ferryv1.Object, error) {
	size := int64(len(data))
	crc := store.CRC32C(data)
	spec := u.spec(key, opts)
	spec.Size = &size
	spec.Crc32C = &crc
	progress := u.progress(size)
	var obj *ferryv1.Object
	err := u.retry(ctx, func() error {
		stream := u.client.Upload(ctx)
		msgs := []*ferryv1.UploadRequest{
			{Message: &ferryv1.UploadRequest_Header{Header: &ferryv1.UploadHeader{Target: &ferryv1.UploadHeader_Create{Create: spec}}}},
			{Message: &ferryv1.UploadRequest_Chunk{Chunk: &ferryv1.Chunk{Index: 0, Data: data, Crc32C: &crc}}},
			{Message: &ferryv1.UploadRequest_Finish{Finish: &ferryv1.UploadFinish{Size: &size, Crc32C: &crc}}},
		}
		for _, msg := range msgs {
			if err := stream.Send(msg); err != nil {
				_, err = closeUploadStream(stream, err)
				return err
			}
		}
		progress.Add(size)
		resp, err := stream.CloseAndReceive()
		if err != nil {
			progress.Add(-size)
			return err
		}
		obj = resp.Msg.GetObject()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("upload %q: %w", key, err)
	}
	if err := verifyUploadedObject(obj, size, crc); err != nil {
		return nil, fmt.Errorf("upload %q: %w", key, err)
	}
	return obj, nil
}

// create starts an upload with CreateUpload. A retried call may leave an
// unused upload behind, which expires.
func (u *Uploader) create(ctx context.Context, spec *ferryv1.UploadSpec) (*ferryv1.UploadInfo, error) {
	var info *ferryv1.UploadInfo
	err := u.retry(ctx, func() error {
		resp, err := u.client.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: spec}))
		if err != nil {
			return err
		}
		info = resp.Msg.GetUpload()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("create upload %q: %w", spec.GetKey(), err)
	}
	if info.GetUploadId() == "" || info.GetSpec().GetChunkSize() <= 0 {
		return nil, fmt.Errorf("create upload %q: the server returned no upload ID or chunk size", spec.GetKey())
	}
	if u.opts.Created != nil {
		u.opts.Created(info.GetUploadId())
	}
	return info, nil
}

// status returns an upload's parameters and its committed chunks by index,
// from every page of GetUpload, and the object it made when it is
// completed (nil otherwise).
func (u *Uploader) status(ctx context.Context, uploadID string) (*ferryv1.UploadInfo, map[int64]*ferryv1.CommittedChunk, *ferryv1.Object, error) {
	var (
		info      *ferryv1.UploadInfo
		committed = make(map[int64]*ferryv1.CommittedChunk)
		obj       *ferryv1.Object
		token     string
	)
	for {
		var resp *connect.Response[ferryv1.GetUploadResponse]
		err := u.retry(ctx, func() error {
			var err error
			resp, err = u.client.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{
				UploadId:  uploadID,
				PageSize:  store.MaxParts,
				PageToken: token,
			}))
			return err
		})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("get upload %s: %w", uploadID, err)
		}
		if info == nil {
			info = resp.Msg.GetUpload()
		}
		if o := resp.Msg.GetObject(); o != nil {
			obj = o
		}
		for _, c := range resp.Msg.GetChunks() {
			committed[c.GetIndex()] = c
		}
		token = resp.Msg.GetNextPageToken()
		if token == "" {
			break
		}
	}
	if info.GetSpec().GetChunkSize() <= 0 {
		return nil, nil, nil, fmt.Errorf("get upload %s: the server returned no chunk size", uploadID)
	}
	return info, committed, obj, nil
}

// uploaderPlan is the shared state of one upload of a known size from an
// io.ReaderAt: which chunks remain, and each chunk's CRC32C once read.
type uploaderPlan struct {
	uploadID  string
	r         io.ReaderAt
	size      int64
	chunkSize int64
	// committed holds the chunks the server reported committed before this
	// run started (resume); read-only during the run.
	committed map[int64]*ferryv1.CommittedChunk
	// crcs[i] is chunk i's CRC32C, written only by the worker holding chunk
	// i and read after all workers are done.
	crcs     []uint32
	next     atomic.Int64
	progress *ProgressCounter
}

func (p *uploaderPlan) count() int64 { return int64(len(p.crcs)) }

// span returns the offset and length in bytes of chunk i.
func (p *uploaderPlan) span(i int64) (off, n int64) {
	off = i * p.chunkSize
	return off, min(p.chunkSize, p.size-off)
}

// finish sends the chunks of r that the upload lacks over parallel streams,
// then completes the upload and verifies the object.
func (u *Uploader) finish(ctx context.Context, info *ferryv1.UploadInfo, r io.ReaderAt, size int64, committed map[int64]*ferryv1.CommittedChunk) (*ferryv1.Object, error) {
	chunkSize := info.GetSpec().GetChunkSize()
	count := max(1, (size+chunkSize-1)/chunkSize)
	if count > store.MaxParts {
		return nil, fmt.Errorf("upload %s: %d bytes in chunks of %d bytes makes %d chunks, over the limit of %d", info.GetUploadId(), size, chunkSize, count, store.MaxParts)
	}
	p := &uploaderPlan{
		uploadID:  info.GetUploadId(),
		r:         r,
		size:      size,
		chunkSize: chunkSize,
		committed: committed,
		crcs:      make([]uint32, count),
		progress:  u.progress(size),
	}
	g, gctx := errgroup.WithContext(ctx)
	for range min(int64(u.opts.Concurrency), count) {
		g.Go(func() error { return u.streamChunks(gctx, p) })
	}
	if err := g.Wait(); err != nil {
		return nil, &InterruptedError{UploadID: p.uploadID, Err: err}
	}
	var crc uint32
	for i, c := range p.crcs {
		_, n := p.span(int64(i))
		crc = store.CombineCRC32C(crc, c, n)
	}
	obj, err := u.complete(ctx, p.uploadID, size, crc)
	if err != nil {
		return nil, &InterruptedError{UploadID: p.uploadID, Err: err}
	}
	return obj, nil
}

// streamChunks is one of the parallel workers of finish: it takes chunks
// from the plan and sends them over an Upload stream, and reopens the
// stream after a transient failure, sending again only the chunks of the
// broken stream that GetUpload does not report committed.
func (u *Uploader) streamChunks(ctx context.Context, p *uploaderPlan) error {
	var again []int64 // chunks to send again, before taking new ones
	attempts := u.newAttempts()
	for {
		sent, err := u.streamOnce(ctx, p, &again)
		if err == nil {
			return nil
		}
		if err := attempts.Wait(ctx, err); err != nil {
			return err
		}
		// Learn which of the chunks sent on the broken stream the server
		// committed; the others were in flight and go again.
		_, committed, obj, err := u.status(ctx, p.uploadID)
		if err != nil {
			return err
		}
		if obj != nil {
			return nil // completed meanwhile: complete and verify it
		}
		for _, i := range sent {
			if c, ok := committed[i]; ok && c.GetCrc32C() == p.crcs[i] {
				attempts.Reset() // the stream got something done
				continue
			}
			_, n := p.span(i)
			p.progress.Add(-n)
			again = append(again, i)
		}
	}
}

// streamOnce sends chunks over one Upload stream until none remain or the
// stream fails. It returns the chunks it sent (including one whose Send
// failed), so that the caller can find which are not committed.
func (u *Uploader) streamOnce(ctx context.Context, p *uploaderPlan, again *[]int64) (sent []int64, err error) {
	var stream *connect.ClientStreamForClient[ferryv1.UploadRequest, ferryv1.UploadResponse]
	for {
		var i int64
		if len(*again) > 0 {
			i, *again = (*again)[0], (*again)[1:]
		} else if i = p.next.Add(1) - 1; i >= p.count() {
			break
		}
		off, n := p.span(i)
		buf := u.buffer(n)
		data := (*buf)[:n]
		if err := readFullAt(p.r, data, off); err != nil {
			u.buffers.Put(buf)
			return sent, backoff.Permanent(fmt.Errorf("chunk %d: %w", i, err))
		}
		crc := store.CRC32C(data)
		p.crcs[i] = crc
		if c, ok := p.committed[i]; ok && c.GetCrc32C() == crc && c.GetSize() == n {
			u.buffers.Put(buf)
			p.progress.Add(n)
			continue
		}
		if stream == nil {
			stream = u.client.Upload(ctx)
			header := &ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Header{
				Header: &ferryv1.UploadHeader{Target: &ferryv1.UploadHeader_UploadId{UploadId: p.uploadID}},
			}}
			if err := stream.Send(header); err != nil {
				u.buffers.Put(buf)
				*again = append([]int64{i}, *again...)
				_, err = closeUploadStream(stream, err)
				return sent, err
			}
		}
		sent = append(sent, i)
		p.progress.Add(n) // taken back by streamChunks if the chunk is lost
		err := stream.Send(&ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Chunk{
			Chunk: &ferryv1.Chunk{Index: i, Data: data, Crc32C: &crc},
		}})
		u.buffers.Put(buf)
		if err != nil {
			_, err = closeUploadStream(stream, err)
			return sent, err
		}
	}
	if stream == nil {
		return nil, nil
	}
	resp, err := stream.CloseAndReceive()
	if err != nil {
		return sent, err
	}
	done := make(map[int64]bool, len(resp.Msg.GetCommitted()))
	for _, i := range resp.Msg.GetCommitted() {
		done[i] = true
	}
	for _, i := range sent {
		if !done[i] {
			return sent, backoff.Permanent(fmt.Errorf("the Upload stream ended without committing chunk %d", i))
		}
	}
	return nil, nil
}

// readFullAt reads len(b) bytes at offset off of r; an input shorter than
// that is an error (the file shrank).
func readFullAt(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %d bytes at offset %d: got %d: %w", len(b), off, n, err)
}

// closeUploadStream ends a stream whose Send failed and returns the
// server's error, which Send only reports as io.EOF.
func closeUploadStream(stream *connect.ClientStreamForClient[ferryv1.UploadRequest, ferryv1.UploadResponse], sendErr error) (*connect.Response[ferryv1.UploadResponse], error) {
	resp, err := stream.CloseAndReceive()
	if err == nil {
		return resp, fmt.Errorf("the Upload stream closed early: %w", sendErr)
	}
	return resp, err
}

// uploaderChunk is one chunk read from a stream, held in a pooled buffer until
// the server commits it.
type uploaderChunk struct {
	index int64
	buf   *[]byte
	data  []byte
	crc   uint32
}

// putChunks reads r in sequence into chunks and sends each with PutChunk,
// Concurrency at a time, then completes the upload with the size and the
// whole-object CRC32C.
func (u *Uploader) putChunks(ctx context.Context, info *ferryv1.UploadInfo, r io.Reader) (*ferryv1.Object, error) {
	uploadID := info.GetUploadId()
	chunkSize := info.GetSpec().GetChunkSize()
	progress := u.progress(-1)
	var (
		crcs  []uint32 // written by the reader goroutine only
		sizes []int64
	)
	slots := make(chan struct{}, u.opts.Concurrency) // one per chunk buffer
	items := make(chan uploaderChunk)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(items)
		for i := int64(0); ; i++ {
			select {
			case slots <- struct{}{}:
			case <-gctx.Done():
				return gctx.Err()
			}
			buf := u.buffer(chunkSize)
			n, err := io.ReadFull(r, (*buf)[:chunkSize])
			if n == 0 && i > 0 && errors.Is(err, io.EOF) {
				u.buffers.Put(buf)
				return nil
			}
			if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				u.buffers.Put(buf)
				return fmt.Errorf("read chunk %d: %w", i, err)
			}
			if i >= store.MaxParts {
				u.buffers.Put(buf)
				return fmt.Errorf("the input is longer than %d chunks of %d bytes", store.MaxParts, chunkSize)
			}
			data := (*buf)[:n]
			item := uploaderChunk{index: i, buf: buf, data: data, crc: store.CRC32C(data)}
			crcs = append(crcs, item.crc)
			sizes = append(sizes, int64(n))
			select {
			case items <- item:
			case <-gctx.Done():
				u.buffers.Put(buf)
				return gctx.Err()
			}
			if err != nil { // the short last chunk
				return nil
			}
		}
	})
	for range u.opts.Concurrency {
		g.Go(func() error {
			for item := range items {
				err := u.putChunk(gctx, uploadID, item)
				u.buffers.Put(item.buf)
				<-slots
				if err != nil {
					return err
				}
				progress.Add(int64(len(item.data)))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var size int64
	var crc uint32
	for i, c := range crcs {
		crc = store.CombineCRC32C(crc, c, sizes[i])
		size += sizes[i]
	}
	return u.complete(ctx, uploadID, size, crc)
}

// putChunk sends one chunk with PutChunk, retrying transient failures, and
// checks that the server committed the chunk that was sent.
func (u *Uploader) putChunk(ctx context.Context, uploadID string, item uploaderChunk) error {
	return u.retry(ctx, func() error {
		resp, err := u.client.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{
			UploadId: uploadID,
			Chunk:    &ferryv1.Chunk{Index: item.index, Data: item.data, Crc32C: &item.crc},
		}))
		if err != nil {
			return err
		}
		if c := resp.Msg.GetChunk(); c.GetIndex() != item.index || c.GetSize() != int64(len(item.data)) || c.GetCrc32C() != item.crc {
			return backoff.Permanent(fmt.Errorf("chunk %d: the server committed index %d, %d bytes, CRC32C %08x; sent %d bytes, CRC32C %08x",
				item.index, c.GetIndex(), c.GetSize(), c.GetCrc32C(), len(item.data), item.crc))
		}
		return nil
	})
}

// complete completes an upload with CompleteUpload (idempotent, so retried)
// and verifies the object.
func (u *Uploader) complete(ctx context.Context, uploadID string, size int64, crc uint32) (*ferryv1.Object, error) {
	var obj *ferryv1.Object
	policy := u.opts.Retry
	if policy.MaxAttempts == 0 {
		policy.MaxAttempts = completionAttempts
	}
	err := policy.Do(ctx, func() error {
		resp, err := u.client.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{
			UploadId: uploadID,
			Size:     &size,
			Crc32C:   &crc,
		}))
		if err != nil {
			return err
		}
		obj = resp.Msg.GetObject()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("complete upload: %w", err)
	}
	if err := verifyUploadedObject(obj, size, crc); err != nil {
		return nil, err
	}
	return obj, nil
}

// completionAttempts is how many times in a row CompleteUpload is tried
// under the default RetryPolicy (MaxAttempts 0), twice the other calls'
// 8: completion is idempotent and comes after every byte is committed, so
// giving up there wastes the whole transfer, and an object store that is
// healing after losing a node can list an upload's parts inconsistently
// (answered ABORTED) for longer than 8 attempts ride out: TestCluster saw
// 7 aborted completions in a row over 28 s on distributed MinIO, on a
// busy machine. With the default backoff, 16 attempts ride out about 90 s.
const completionAttempts = 16

// verifyObject checks the object the server stored against what was sent.
func verifyUploadedObject(obj *ferryv1.Object, size int64, crc uint32) error {
	switch {
	case obj == nil:
		return fmt.Errorf("%w: the server returned no object", ErrObjectMismatch)
	case obj.GetSize() != size:
		return fmt.Errorf("%w: %q is %d bytes, sent %d", ErrObjectMismatch, obj.GetKey(), obj.GetSize(), size)
	case obj.Crc32C == nil:
		return fmt.Errorf("%w: %q has no CRC32C", ErrObjectMismatch, obj.GetKey())
	case obj.GetCrc32C() != crc:
		return fmt.Errorf("%w: %q has CRC32C %08x, sent %08x", ErrObjectMismatch, obj.GetKey(), obj.GetCrc32C(), crc)
	}
	return nil
}

// buffer returns a pooled buffer of at least n bytes.
func (u *Uploader) buffer(n int64) *[]byte {
	if b, ok := u.buffers.Get().(*[]byte); ok && int64(cap(*b)) >= n {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n)
	return &b
}

// ProgressCounter sums the bytes a transfer has done and reports the running
// total to a Progress callback (done and total in bytes, total -1 when
// unknown), one call at a time. The Uploader and the download.Downloader
// share it. A counter with a nil callback does nothing.
type ProgressCounter struct {
	mu    sync.Mutex
	fn    func(done, total int64)
	done  int64
	total int64
}

// NewProgressCounter returns a counter that starts at done bytes of total
// and reports to fn, which may be nil.
func NewProgressCounter(fn func(done, total int64), done, total int64) *ProgressCounter {
	return &ProgressCounter{fn: fn, done: done, total: total}
}

func (u *Uploader) progress(total int64) *ProgressCounter {
	return NewProgressCounter(u.opts.Progress, 0, total)
}

// Add counts n more bytes done (n < 0 takes back bytes that must be sent
// again) and reports the new total.
func (p *ProgressCounter) Add(n int64) {
	if p.fn == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	p.fn(p.done, p.total)
}

// retry runs op with u's retry policy.
func (u *Uploader) retry(ctx context.Context, op func() error) error {
	return u.opts.Retry.Do(ctx, op)
}

func (u *Uploader) newAttempts() *Attempts { return u.opts.Retry.Attempts() }

// RetryPolicy says when an [Uploader] (or a download.Downloader) tries a
// call or stream again after a transient failure, and how long it waits
// first. The zero value is ready to use.
type RetryPolicy struct {
	// BackOff returns the waits between attempts; it is called once per
	// operation, and the value's Reset is called before use. nil means
	// exponential backoff from 250 ms, doubling per attempt up to 8 s, with
	// ±50% jitter: with the default MaxAttempts, an operation rides out
	// about 24 s of failures (a server restarting, a store briefly down).
	BackOff func() backoff.BackOff
	// MaxAttempts is how many times in a row an operation is tried before
	// its error is returned. 0 means 8, and 16 for CompleteUpload (see
	// completionAttempts); 1 disables retries.
	MaxAttempts int
	// Notify, when set, is called before each wait with the error that
	// caused it and the wait's length. It may be called from several
	// goroutines at once.
	Notify func(err error, wait time.Duration)
}

// Do runs op until it succeeds, fails with an error that is not transient
// ([IsTransient]) or is marked [backoff.Permanent], or has failed
// MaxAttempts times. It returns op's last error, without the Permanent
// wrapper.
func (p RetryPolicy) Do(ctx context.Context, op func() error) error {
	attempts := p.Attempts()
	for {
		err := op()
		if err == nil {
			return nil
		}
		if err := attempts.Wait(ctx, err); err != nil {
			return err
		}
	}
}

// Attempts returns a counter of the failed attempts of one operation, for
// loops that [RetryPolicy.Do] does not fit: a stream that makes progress
// between failures.
func (p RetryPolicy) Attempts() *Attempts {
	a := &Attempts{max: p.MaxAttempts, notify: p.Notify}
	if a.max <= 0 {
		a.max = 8
	}
	if p.BackOff != nil {
		a.backOff = p.BackOff()
	} else {
		a.backOff = &backoff.ExponentialBackOff{
			InitialInterval:     250 * time.Millisecond,
			RandomizationFactor: 0.5,
			Multiplier:          2,
			MaxInterval:         8 * time.Second,
		}
	}
	a.backOff.Reset()
	return a
}

// Attempts counts the failed attempts of one operation in a row and waits
// between them; see [RetryPolicy.Attempts]. It is not safe for concurrent
// use.
type Attempts struct {
	max     int
	backOff backoff.BackOff
	notify  func(err error, wait time.Duration)
	failed  int
}

// Wait decides what follows an attempt that failed with err, made with ctx.
// It returns nil, after waiting out the backoff, when the operation should
// be tried again; otherwise the error to give up with: err itself (without
// a [backoff.Permanent] wrapper) when it is not transient or the attempts
// are used up.
func (a *Attempts) Wait(ctx context.Context, err error) error {
	if !IsTransient(ctx, err) {
		return unwrapPermanent(err)
	}
	a.failed++
	if a.failed >= a.max {
		return err
	}
	d := a.backOff.NextBackOff()
	if d == backoff.Stop {
		return err
	}
	if a.notify != nil {
		a.notify(err, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return err
	}
}

// Reset restarts the count and the backoff, after a failed attempt that got
// something done (a stream that committed chunks before it broke), so that
// a long transfer with occasional failures is not given up.
func (a *Attempts) Reset() {
	a.failed = 0
	a.backOff.Reset()
}

// unwrapPermanent returns err without the [backoff.Permanent] wrapper that
// marks errors not to retry.
func unwrapPermanent(err error) error {
	if permanent := (*backoff.PermanentError)(nil); errors.As(err, &permanent) {
		return permanent.Unwrap()
	}
	return err
}

// IsTransient reports whether err, returned by an RPC made with ctx, is
// worth retrying: err is not marked [backoff.Permanent] and
// [wire.Retryable] says so (ctx not done; UNAVAILABLE, DEADLINE_EXCEEDED,
// ABORTED, RESOURCE_EXHAUSTED, or a broken connection).
func IsTransient(ctx context.Context, err error) bool {
	if permanent := (*backoff.PermanentError)(nil); errors.As(err, &permanent) {
		return false
	}
	return wire.Retryable(ctx, err)
}
