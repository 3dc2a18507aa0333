package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
)

// propagator carries trace context between processes: W3C Trace Context
// (traceparent, tracestate) only. Not Baggage: ferry reads none, and a
// server would otherwise pass whatever baggage a client sent on to its
// object store in every S3 request.
var propagator propagation.TextMapPropagator = propagation.TraceContext{}

// TracingEnabled reports whether traces are to be exported: endpoint (a
// flag such as --otlp-endpoint) is set, or one of OpenTelemetry's standard
// variables OTEL_EXPORTER_OTLP_ENDPOINT and
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is, and OTEL_SDK_DISABLED is not
// "true".
func TracingEnabled(endpoint string) bool {
	if os.Getenv("OTEL_SDK_DISABLED") == "true" {
		return false
	}
	return endpoint != "" || os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// StartTracing installs, when [TracingEnabled] says so, a global tracer
// provider that exports spans over OTLP/HTTP (protobuf) in batches, with
// the resource attribute service.name = service, and W3C Trace Context as
// the global propagator. endpoint is a URL
// ("http://collector:4318", to which /v1/traces is added) and overrides
// the environment; empty leaves the exporter to the standard OTEL_EXPORTER_
// OTLP_* variables (endpoint, headers, timeout, TLS). Otherwise it changes
// nothing: the global provider stays OpenTelemetry's no-op one, and
// tracing costs nothing.
//
// The returned shutdown flushes the spans still buffered and stops the
// exporter; call it before the process exits. It is never nil.
func StartTracing(ctx context.Context, service, endpoint string) (shutdown func(context.Context) error, err error) {
	if !TracingEnabled(endpoint) {
		return func(context.Context) error { return nil }, nil
	}
	var opts []otlptracehttp.Option
	if endpoint != "" {
		// As OTEL_EXPORTER_OTLP_ENDPOINT: a base URL, to which the
		// signal's path is added.
		u, err := url.Parse(endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("OTLP endpoint %q: want an http or https URL such as http://collector:4318", endpoint)
		}
		u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
		opts = append(opts, otlptracehttp.WithEndpointURL(u.String()))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, err
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(service)))
	if err != nil {
		return nil, errors.Join(err, exp.Shutdown(ctx))
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagator)
	return tp.Shutdown, nil
}

// RPCTracing returns a connect interceptor that makes a span per RPC, for
// handlers and clients alike, with tp (nil: the global provider) and W3C
// Trace Context headers. A server span is the child of the span its caller
// propagated (W3C traceparent), through any proxy that forwards headers,
// so that one trace runs from the CLI through a load balancer to the
// store's requests. It records RPC metrics nowhere (the telemetry
// interceptor does) and no event per message.
func RPCTracing(tp trace.TracerProvider) (connect.Interceptor, error) {
	opts := []otelconnect.Option{otelconnect.WithoutMetrics(), otelconnect.WithTrustRemote(), otelconnect.WithPropagator(propagator)}
	if tp != nil {
		opts = append(opts, otelconnect.WithTracerProvider(tp))
	}
	return otelconnect.NewInterceptor(opts...)
}

// TraceTransport wraps an HTTP transport so that each request it sends is
// a client span (otelhttp), a child of the span in its context: given to
// the S3 client, it puts every S3 request under the store call that made
// it. tp nil means the global provider.
func TraceTransport(rt http.RoundTripper, tp trace.TracerProvider) http.RoundTripper {
	var opts []otelhttp.Option
	if tp != nil {
		opts = append(opts, otelhttp.WithTracerProvider(tp))
	}
	return otelhttp.NewTransport(rt, opts...)
}
