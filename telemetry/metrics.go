// Package telemetry observes ferry's RPCs: one structured log line per RPC
// (log/slog) and Prometheus metrics, both from one connect interceptor
// ([NewInterceptor]) placed outermost on the service handlers, so refused
// requests (Unauthenticated, PermissionDenied, ResourceExhausted) are seen
// too.
//
// Metrics (served by [Metrics.Handler], on an address of its own):
//
//	ferry_received_bytes_total{procedure}        bytes of request messages (protobuf encoding)
//	ferry_sent_bytes_total{procedure}            bytes of response messages
//	ferry_active_uploads                         Upload streams and PutChunk calls in progress
//	ferry_chunk_duration_seconds                 time to commit one chunk once received:
//	                                             a PutChunk call's handling, or, in an Upload
//	                                             stream, from a chunk's arrival to the next read
//	ferry_rpcs_total{procedure,code}             finished RPCs by Connect code ("ok" for none)
//	ferry_rpc_errors_total{procedure,code}       the failed ones alone
//	ferry_rpc_duration_seconds{procedure}        whole RPC duration
//	ferry_http_connections                       client connections served now (see [Metrics.Connections])
//	ferry_http_connections_evicted_total         idle or silent connections closed to make room
//	                                             for a new one at --max-connections
//
// plus the Go runtime and process collectors (go_*, process_*).
package telemetry

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds ferry's Prometheus collectors in a registry of their own
// (no package-level state).
type Metrics struct {
	registry      *prometheus.Registry
	bytesIn       *prometheus.CounterVec
	bytesOut      *prometheus.CounterVec
	activeUploads prometheus.Gauge
	chunkSeconds  prometheus.Histogram
	rpcs          *prometheus.CounterVec
	errors        *prometheus.CounterVec
	rpcSeconds    *prometheus.HistogramVec
}

// NewMetrics returns ferry's metrics, registered with a new registry
// together with the Go runtime and process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_received_bytes_total",
			Help: "Bytes of request messages received (protobuf encoding), by procedure.",
		}, []string{"procedure"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_sent_bytes_total",
			Help: "Bytes of response messages sent (protobuf encoding), by procedure.",
		}, []string{"procedure"}),
		activeUploads: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_active_uploads",
			Help: "Upload streams and PutChunk calls in progress.",
		}),
		chunkSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ferry_chunk_duration_seconds",
			Help: "Seconds to commit one received chunk to the store.",
			// 1 ms to ~65 s.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 17),
		}),
		rpcs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_rpcs_total",
			Help: "Finished RPCs by procedure and Connect code (ok for success).",
		}, []string{"procedure", "code"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_rpc_errors_total",
			Help: "Failed RPCs by procedure and Connect code.",
		}, []string{"procedure", "code"}),
		rpcSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ferry_rpc_duration_seconds",
			Help:    "Seconds from the start of an RPC to its end, by procedure.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"procedure"}),
	}
	m.registry.MustRegister(m.bytesIn, m.bytesOut, m.activeUploads, m.chunkSeconds, m.rpcs, m.errors, m.rpcSeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler returns the HTTP handler of the metrics in the Prometheus text
// (or OpenMetrics) exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// Connections registers ferry_http_connections, the number of client
// connections open reports (called at each scrape), and returns the
// function to call each time a connection is closed to make room for a
// new one (ferry_http_connections_evicted_total): a rising count says the
// server runs at --max-connections and clients see idle connections
// closed. Call it at most once per Metrics; a second call panics (the
// names are registered already).
func (m *Metrics) Connections(open func() int) (evicted func()) {
	evictions := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ferry_http_connections_evicted_total",
		Help: "Idle or silent client connections closed to make room for a new one at --max-connections.",
	})
	m.registry.MustRegister(evictions, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ferry_http_connections",
		Help: "Client connections served now (HTTP/1.1 and HTTP/2).",
	}, func() float64 { return float64(open()) }))
	return evictions.Inc
}

// Registry returns the registry of the metrics, for tests and for adding
// collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }
