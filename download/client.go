package download

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
	"sync/atomic"

	"connectrpc.com/connect"
	"github.com/cenkalti/backoff/v5"
	"golang.org/x/sync/errgroup"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/store"
	"github.com/ferryhq/ferry/upload"
)

// Errors a [Downloader] returns, wrapped with detail; test with [errors.Is].
var (
	// ErrObjectChanged: the object was written again since the download
	// started (its ETag differs from the first response's), so the bytes
	// received so far belong to an older version. Download it again from
	// offset 0. The error also wraps the server's FAILED_PRECONDITION.
	ErrObjectChanged = errors.New("object changed during the download")
	// ErrChecksumMismatch: the bytes received do not have the object's size
	// or CRC32C. For [Downloader.ResumeAt] it usually means the bytes
	// already in the file were not this object's.
	ErrChecksumMismatch = errors.New("downloaded bytes do not match the object's checksum")
)

// DownloaderOptions configure a [Downloader]. The zero value is ready to
// use.
type DownloaderOptions struct {
	// Concurrency is the number of ranged Download streams that
	// [Downloader.DownloadAt] and [Downloader.ResumeAt] run at once. 0 means
	// 4.
	Concurrency int
	// RangeSize is the number of bytes each ranged stream of
	// [Downloader.DownloadAt] asks for; the object is cut into ranges of
	// this size that the streams take in turn. 0 means 16 MiB.
	RangeSize int64
	// Retry says when and how long to wait before opening a stream again
	// after a transient failure ([upload.IsTransient]). The new stream
	// starts where the broken one stopped, with if_match set to the
	// object's ETag; a stream that delivered bytes before it broke starts
	// the count of attempts again.
	Retry upload.RetryPolicy
	// Progress, when set, is called after each data message is written, with
	// the bytes written so far and the object's size in bytes. Calls are
	// serialized.
	Progress func(done, total int64)
	// Checkpoint, when set, is called by [Downloader.DownloadAt] and
	// [Downloader.ResumeAt] with the object's ETag and the number of bytes
	// from the object's start that are written without a gap: once when the
	// first response arrives, then each time a range completes the gapless
	// prefix. Calls are serialized and block the completion of further
	// ranges, so a caller may sync the file and record the pair: after a
	// crash, truncating the file to written and calling ResumeAt with
	// ifMatch set to the ETag continues the download.
	Checkpoint func(etag string, written int64)
}

// InterruptedError is returned when a download to an [io.WriterAt] stops
// before the end: the first Written bytes of the object are in place (later
// ranges may be written in part too), so truncating the file to Written and
// calling [Downloader.ResumeAt] with offset Written continues it.
type InterruptedError struct {
	// Key is the object's key.
	Key string
	// ETag is the object's ETag at the start of the download; empty when no
	// response arrived.
	ETag string
	// Written is the number of bytes of the object, from its start, that
	// were written without a gap.
	Written int64
	// Err is why the download stopped.
	Err error
}

// Error implements error.
func (e *InterruptedError) Error() string {
	return fmt.Sprintf("download %q interrupted after %d bytes: %v", e.Key, e.Written, e.Err)
}

// Unwrap returns e.Err, so [connect.CodeOf] and [errors.Is] see through e.
func (e *InterruptedError) Unwrap() error { return e.Err }

// ReadWriterAt is a file being downloaded into: [Downloader.ResumeAt] reads
// the bytes already there and writes the rest.
type ReadWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// Downloader reads objects through a DownloadService: in order to an
// [io.Writer], or in parallel ranges to an [io.WriterAt], resuming a broken
// stream where it stopped without mixing two versions of an object, and
// verifying the whole-object CRC32C. It is safe for concurrent use.
//
// Object data is mostly incompressible: a client made with
// connect.WithAcceptCompression("gzip", nil, nil) keeps a server from
// spending a core gzipping data messages for little gain.
type Downloader struct {
	client ferryv1connect.DownloadServiceClient
	opts   DownloaderOptions
}

// NewDownloader returns a Downloader that calls client with opts.
func NewDownloader(client ferryv1connect.DownloadServiceClient, opts DownloaderOptions) *Downloader {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 4
	}
	if opts.RangeSize <= 0 {
		opts.RangeSize = 16 << 20
	}
	return &Downloader{client: client, opts: opts}
}

// WithProgress returns a Downloader like d that reports progress to fn
// instead (see [DownloaderOptions.Progress]; nil reports none), for a
// caller that shows each of many concurrent downloads on its own.
func (d *Downloader) WithProgress(fn func(done, total int64)) *Downloader {
	opts := d.opts
	opts.Progress = fn
	return &Downloader{client: d.client, opts: opts}
}

// Download writes the object key to w, in order, over one Download stream,
// and returns its attributes. When the stream breaks, a new one asks for
// the rest with if_match set to the ETag of the first response, so the
// bytes come from one version of the object. The bytes are checked against
// the object's size and CRC32C (when the object has one: objects not
// written through ferry may not) once all are written; w has received them
// by then, so a caller writing to a file should discard it on error.
func (d *Downloader) Download(ctx context.Context, key string, w io.Writer) (*ferryv1.Object, error) {
	job := &rangeJob{off: 0, n: -1}
	stream, obj, err := d.openFirst(ctx, key, job, 0, "")
	if err != nil {
		return nil, fmt.Errorf("download %q: %w", key, err)
	}
	progress := d.progress(obj.GetSize(), 0)
	sink := func(p []byte, _ int64) error {
		_, err := w.Write(p)
		return err
	}
	if err := d.fetch(ctx, key, obj.GetEtag(), job, stream, sink, progress); err != nil {
		return nil, fmt.Errorf("download %q: %w", key, err)
	}
	if err := verifyDownload(obj, job.got, job.crc); err != nil {
		return nil, fmt.Errorf("download %q: %w", key, err)
	}
	return obj, nil
}

// DownloadAt writes the object key to w at the object's offsets, over up to
// Concurrency ranged Download streams at once, and returns its attributes.
// The first stream's response gives the size and ETag; every later range
// asks for that ETag, so all bytes come from one version. Each range's
// CRC32C is computed as it arrives and the values are combined
// ([store.CombineCRC32C]) into the whole-object CRC32C that is checked at
// the end. A broken stream is reopened where it stopped. When the download
// stops early the error is an [*InterruptedError] that tells how much of
// the object is in place.
func (d *Downloader) DownloadAt(ctx context.Context, key string, w io.WriterAt) (*ferryv1.Object, error) {
	return d.downloadAt(ctx, key, w, 0, 0, "")
}

// ResumeAt continues a download into f whose first offset bytes are
// already there (as left by an interrupted [Downloader.Download] or, after
// truncating to [InterruptedError.Written], [Downloader.DownloadAt]). It
// reads those bytes once to compute their CRC32C, downloads the rest like
// DownloadAt, and checks the whole object's CRC32C, so bytes that were not
// this object's are reported as [ErrChecksumMismatch]. ifMatch, when not
// empty, is the ETag the first attempt saw; the download then fails with
// [ErrObjectChanged] if the object was written since.
func (d *Downloader) ResumeAt(ctx context.Context, key string, f ReadWriterAt, offset int64, ifMatch string) (*ferryv1.Object, error) {
	if offset < 0 {
		return nil, fmt.Errorf("download %q: negative offset %d", key, offset)
	}
	crc, err := prefixCRC32C(f, offset)
	if err != nil {
		return nil, fmt.Errorf("download %q: %w", key, err)
	}
	return d.downloadAt(ctx, key, f, offset, crc, ifMatch)
}

// prefixCRC32C returns the CRC32C of the first n bytes of r.
func prefixCRC32C(r io.ReaderAt, n int64) (uint32, error) {
	buf := make([]byte, min(n, 1<<20))
	var crc uint32
	for off := int64(0); off < n; {
		b := buf[:min(int64(len(buf)), n-off)]
		k, err := r.ReadAt(b, off)
		crc = crc32.Update(crc, store.Castagnoli, b[:k])
		off += int64(k)
		if k < len(b) {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, fmt.Errorf("read the %d bytes already downloaded: got %d: %w", n, off, err)
		}
	}
	return crc, nil
}

// downloadAt downloads the object from offset start to its end into w over
// parallel ranged streams; prefixCRC is the CRC32C of the bytes before
// start.
func (d *Downloader) downloadAt(ctx context.Context, key string, w io.WriterAt, start int64, prefixCRC uint32, ifMatch string) (*ferryv1.Object, error) {
	first := &rangeJob{off: start, n: -1}
	stream, obj, err := d.openFirst(ctx, key, first, d.opts.RangeSize, ifMatch)
	if err != nil {
		return nil, &InterruptedError{Key: key, ETag: ifMatch, Written: start, Err: err}
	}
	size, etag := obj.GetSize(), obj.GetEtag()
	jobs := []*rangeJob{first}
	for off := start + first.n; off < size; off += d.opts.RangeSize {
		jobs = append(jobs, &rangeJob{off: off, n: min(d.opts.RangeSize, size-off)})
	}
	progress := d.progress(size, start)
	completed := d.checkpointer(jobs, etag, start)
	sink := func(p []byte, at int64) error {
		_, err := w.WriteAt(p, at)
		return err
	}
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range min(d.opts.Concurrency, len(jobs)) {
		g.Go(func() error {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(jobs)) {
					return nil
				}
				var s *connect.ServerStreamForClient[ferryv1.DownloadResponse]
				if i == 0 {
					s = stream
				}
				if err := d.fetch(gctx, key, etag, jobs[i], s, sink, progress); err != nil {
					return err
				}
				completed(i)
			}
		})
	}
	err = g.Wait()
	written, crc := start, prefixCRC
	for _, job := range jobs {
		written += job.got
		crc = store.CombineCRC32C(crc, job.crc, job.got)
		if job.got < job.n {
			break
		}
	}
	if err != nil {
		return nil, &InterruptedError{Key: key, ETag: etag, Written: written, Err: err}
	}
	if err := verifyDownload(obj, written, crc); err != nil {
		return nil, fmt.Errorf("download %q: %w", key, err)
	}
	return obj, nil
}

// checkpointer reports the first checkpoint of a download from start and
// returns the function that marks jobs[i] complete, which reports a new one
// when the gapless prefix grows. Without [DownloaderOptions.Checkpoint] it
// does nothing.
func (d *Downloader) checkpointer(jobs []*rangeJob, etag string, start int64) func(i int64) {
	if d.opts.Checkpoint == nil {
		return func(int64) {}
	}
	d.opts.Checkpoint(etag, start)
	var (
		mu      sync.Mutex
		done    = make([]bool, len(jobs))
		next    int // jobs[:next] are complete
		written = start
	)
	return func(i int64) {
		mu.Lock()
		defer mu.Unlock()
		done[i] = true
		grew := false
		for next < len(jobs) && done[next] {
			written += jobs[next].n
			next++
			grew = true
		}
		if grew {
			d.opts.Checkpoint(etag, written)
		}
	}
}

// rangeJob is one byte range of an object to download, and what has been
// received of it.
type rangeJob struct {
	off int64  // first byte of the range
	n   int64  // length in bytes; -1 until the first header tells it
	got int64  // bytes received and written, from off
	crc uint32 // CRC32C of the got bytes
}

// openFirst opens the first stream of a download: the range starting at
// job.off of length bytes (0: to the end), retrying transient failures.
// It fills in job.n from the header and returns the open stream, positioned
// after the header, and the object's attributes.
func (d *Downloader) openFirst(ctx context.Context, key string, job *rangeJob, length int64, ifMatch string) (*connect.ServerStreamForClient[ferryv1.DownloadResponse], *ferryv1.Object, error) {
	var (
		stream *connect.ServerStreamForClient[ferryv1.DownloadResponse]
		header *ferryv1.DownloadHeader
	)
	err := d.opts.Retry.Do(ctx, func() error {
		var err error
		stream, header, err = d.open(ctx, key, job.off, length, ifMatch)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	job.n = header.GetLength()
	return stream, header.GetObject(), nil
}

// open starts a Download stream for length bytes (0: to the end) from
// offset, and receives its header.
func (d *Downloader) open(ctx context.Context, key string, offset, length int64, ifMatch string) (*connect.ServerStreamForClient[ferryv1.DownloadResponse], *ferryv1.DownloadHeader, error) {
	stream, err := d.client.Download(ctx, connect.NewRequest(&ferryv1.DownloadRequest{
		Key:     key,
		Offset:  offset,
		Length:  length,
		IfMatch: ifMatch,
	}))
	if err != nil {
		return nil, nil, objectChanged(err)
	}
	if !stream.Receive() {
		err := stream.Err()
		stream.Close()
		if err == nil {
			err = connect.NewError(connect.CodeUnknown, fmt.Errorf("the Download stream ended before its header: %w", io.ErrUnexpectedEOF))
		}
		return nil, nil, objectChanged(err)
	}
	header := stream.Msg().GetHeader()
	var problem string
	switch {
	case header == nil:
		problem = "the first message is not a header"
	case header.GetObject() == nil:
		problem = "the header has no object"
	case header.GetOffset() != offset:
		problem = fmt.Sprintf("the header's offset is %d, asked for %d", header.GetOffset(), offset)
	case header.GetLength() < 0 || header.GetOffset()+header.GetLength() > header.GetObject().GetSize():
		problem = fmt.Sprintf("the header's range of %d bytes at %d overruns the object's %d bytes", header.GetLength(), header.GetOffset(), header.GetObject().GetSize())
	case length > 0 && header.GetLength() > length:
		problem = fmt.Sprintf("the header's length is %d, asked for %d", header.GetLength(), length)
	case ifMatch != "" && header.GetObject().GetEtag() != ifMatch:
		problem = fmt.Sprintf("the object's ETag is %q, asked for %q", header.GetObject().GetEtag(), ifMatch)
	}
	if problem != "" {
		stream.Close()
		return nil, nil, backoff.Permanent(fmt.Errorf("download %q: protocol error: %s", key, problem))
	}
	return stream, header, nil
}

// objectChanged marks a FAILED_PRECONDITION answer to an if_match request
// as [ErrObjectChanged].
func objectChanged(err error) error {
	if connect.CodeOf(err) == connect.CodeFailedPrecondition {
		return fmt.Errorf("%w: %w", ErrObjectChanged, err)
	}
	return err
}

// fetch receives the rest of job, from stream when it is not nil (already
// past its header) and then from new streams after transient failures,
// each starting where the last stopped and pinned to etag. Each data
// message goes to sink with its offset in the object.
func (d *Downloader) fetch(ctx context.Context, key, etag string, job *rangeJob, stream *connect.ServerStreamForClient[ferryv1.DownloadResponse], sink func(p []byte, at int64) error, progress *upload.ProgressCounter) error {
	attempts := d.opts.Retry.Attempts()
	for {
		if stream == nil {
			if job.got == job.n {
				return nil
			}
			var (
				header *ferryv1.DownloadHeader
				err    error
			)
			stream, header, err = d.open(ctx, key, job.off+job.got, job.n-job.got, etag)
			if err == nil && header.GetLength() != job.n-job.got {
				stream.Close()
				err = backoff.Permanent(fmt.Errorf("download %q: protocol error: the header's length is %d, asked for %d", key, header.GetLength(), job.n-job.got))
			}
			if err != nil {
				if err := attempts.Wait(ctx, err); err != nil {
					return err
				}
				continue
			}
		}
		before := job.got
		err := d.receive(stream, job, sink, progress)
		stream.Close()
		stream = nil
		if err == nil {
			return nil
		}
		if job.got > before {
			attempts.Reset() // the stream delivered bytes before it broke
		}
		if err := attempts.Wait(ctx, err); err != nil {
			return err
		}
	}
}

// receive reads the data messages of stream into sink until the stream
// ends, and reports an error unless all of job arrived.
func (d *Downloader) receive(stream *connect.ServerStreamForClient[ferryv1.DownloadResponse], job *rangeJob, sink func(p []byte, at int64) error, progress *upload.ProgressCounter) error {
	for stream.Receive() {
		data, ok := stream.Msg().GetMessage().(*ferryv1.DownloadResponse_Data)
		if !ok {
			return backoff.Permanent(errors.New("protocol error: a second header in the Download stream"))
		}
		p := data.Data
		if job.got+int64(len(p)) > job.n {
			return backoff.Permanent(fmt.Errorf("protocol error: the Download stream sent more than the %d bytes of its range", job.n))
		}
		if err := sink(p, job.off+job.got); err != nil {
			return backoff.Permanent(fmt.Errorf("write at offset %d: %w", job.off+job.got, err))
		}
		job.got += int64(len(p))
		job.crc = crc32.Update(job.crc, store.Castagnoli, p)
		progress.Add(int64(len(p)))
		recycleData(p) // written and hashed: see WithDataBuffers
	}
	if err := stream.Err(); err != nil {
		return objectChanged(err)
	}
	if job.got < job.n {
		return connect.NewError(connect.CodeUnknown, fmt.Errorf("the Download stream ended after %d of %d bytes: %w", job.got, job.n, io.ErrUnexpectedEOF))
	}
	return nil
}

// verifyDownload checks the bytes received against the object's size and,
// when it has one, CRC32C.
func verifyDownload(obj *ferryv1.Object, size int64, crc uint32) error {
	switch {
	case size != obj.GetSize():
		return fmt.Errorf("%w: got %d bytes of %d", ErrChecksumMismatch, size, obj.GetSize())
	case obj.Crc32C != nil && obj.GetCrc32C() != crc:
		return fmt.Errorf("%w: the bytes have CRC32C %08x, the object %08x", ErrChecksumMismatch, crc, obj.GetCrc32C())
	}
	return nil
}

func (d *Downloader) progress(total, done int64) *upload.ProgressCounter {
	return upload.NewProgressCounter(d.opts.Progress, done, total)
}
