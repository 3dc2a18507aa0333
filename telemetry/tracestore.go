package telemetry

import (
	"context"
	"errors"
	"io"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferryhq/ferry/store"
)

// tracerName is the instrumentation scope of ferry's own spans.
const tracerName = "github.com/ferryhq/ferry/telemetry"

// Span attribute keys of the store spans.
const (
	attrKey      = attribute.Key("ferry.key")
	attrUploadID = attribute.Key("ferry.store.upload_id")
	attrPart     = attribute.Key("ferry.store.part_number")
	attrBytes    = attribute.Key("ferry.store.bytes")
)

// TraceStore returns s with a span per call: "store.<Method>" (an internal
// span, the child of the RPC's span in ctx), with the key, the store's
// upload ID, part number and bytes where the call has them, and the error,
// if any, recorded as the span's status (not found and conflicts too: an
// operator reading a trace sees what the store answered). ReadObject's span
// ends when the call returns, not when the reader is read. tp nil means
// the global provider; with OpenTelemetry's default no-op provider the
// spans cost a few nanoseconds each.
func TraceStore(s store.Store, tp trace.TracerProvider) store.Store {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return &tracedStore{s: s, tracer: tp.Tracer(tracerName)}
}

type tracedStore struct {
	s      store.Store
	tracer trace.Tracer
}

// start starts the span of one store call.
func (t *tracedStore) start(ctx context.Context, method string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return t.tracer.Start(ctx, "store."+method, trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(attrs...))
}

// end records err on span and ends it.
func end(span trace.Span, err error) {
	if err != nil && !errors.Is(err, context.Canceled) {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

func (t *tracedStore) CreateMultipartUpload(ctx context.Context, key string, opts store.CreateOptions) (id string, err error) {
	ctx, span := t.start(ctx, "CreateMultipartUpload", attrKey.String(key))
	defer func() { span.SetAttributes(attrUploadID.String(id)); end(span, err) }()
	return t.s.CreateMultipartUpload(ctx, key, opts)
}

func (t *tracedStore) UploadPart(ctx context.Context, key, uploadID string, number int, r io.Reader, size int64, crc32c uint32) (p store.Part, err error) {
	ctx, span := t.start(ctx, "UploadPart", attrKey.String(key), attrUploadID.String(uploadID), attrPart.Int(number), attrBytes.Int64(size))
	defer func() { end(span, err) }()
	return t.s.UploadPart(ctx, key, uploadID, number, r, size, crc32c)
}

func (t *tracedStore) ListParts(ctx context.Context, key, uploadID string, partNumberMarker, maxParts int) (res store.ListPartsResult, err error) {
	ctx, span := t.start(ctx, "ListParts", attrKey.String(key), attrUploadID.String(uploadID))
	defer func() { end(span, err) }()
	return t.s.ListParts(ctx, key, uploadID, partNumberMarker, maxParts)
}

func (t *tracedStore) CompleteMultipartUpload(ctx context.Context, key, uploadID string, parts []store.Part, opts store.CompleteOptions) (obj store.ObjectInfo, err error) {
	ctx, span := t.start(ctx, "CompleteMultipartUpload", attrKey.String(key), attrUploadID.String(uploadID), attribute.Int("ferry.store.parts", len(parts)))
	defer func() { span.SetAttributes(attrBytes.Int64(obj.Size)); end(span, err) }()
	return t.s.CompleteMultipartUpload(ctx, key, uploadID, parts, opts)
}

func (t *tracedStore) AbortMultipartUpload(ctx context.Context, key, uploadID string) (err error) {
	ctx, span := t.start(ctx, "AbortMultipartUpload", attrKey.String(key), attrUploadID.String(uploadID))
	defer func() { end(span, err) }()
	return t.s.AbortMultipartUpload(ctx, key, uploadID)
}

func (t *tracedStore) ListMultipartUploads(ctx context.Context, key, uploadIDMarker string, maxUploads int) (res store.ListUploadsResult, err error) {
	ctx, span := t.start(ctx, "ListMultipartUploads", attrKey.String(key))
	defer func() { end(span, err) }()
	return t.s.ListMultipartUploads(ctx, key, uploadIDMarker, maxUploads)
}

func (t *tracedStore) PutObject(ctx context.Context, key string, r io.Reader, size int64, opts store.PutOptions) (obj store.ObjectInfo, err error) {
	ctx, span := t.start(ctx, "PutObject", attrKey.String(key), attrBytes.Int64(size))
	defer func() { end(span, err) }()
	return t.s.PutObject(ctx, key, r, size, opts)
}

func (t *tracedStore) ReadObject(ctx context.Context, key string, offset, length int64, opts store.ReadOptions) (rc io.ReadCloser, obj store.ObjectInfo, err error) {
	ctx, span := t.start(ctx, "ReadObject", attrKey.String(key), attribute.Int64("ferry.store.offset", offset), attribute.Int64("ferry.store.length", length))
	defer func() { end(span, err) }()
	return t.s.ReadObject(ctx, key, offset, length, opts)
}

func (t *tracedStore) StatObject(ctx context.Context, key string) (obj store.ObjectInfo, err error) {
	ctx, span := t.start(ctx, "StatObject", attrKey.String(key))
	defer func() { end(span, err) }()
	return t.s.StatObject(ctx, key)
}

func (t *tracedStore) ListObjects(ctx context.Context, prefix, startAfter string, maxKeys int) (res store.ListResult, err error) {
	ctx, span := t.start(ctx, "ListObjects", attribute.String("ferry.prefix", prefix))
	defer func() { end(span, err) }()
	return t.s.ListObjects(ctx, prefix, startAfter, maxKeys)
}

func (t *tracedStore) DeleteObject(ctx context.Context, key string) (err error) {
	ctx, span := t.start(ctx, "DeleteObject", attrKey.String(key))
	defer func() { end(span, err) }()
	return t.s.DeleteObject(ctx, key)
}
