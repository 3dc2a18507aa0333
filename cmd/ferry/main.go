// Command ferry moves files between clients and S3-compatible object
// storage over Connect RPC.
//
//	ferry serve [--addr 127.0.0.1:8080] [--data DIR | --s3-endpoint ... --s3-bucket ...]
//	ferry upload [--server URL] [--protocol connect|grpc|grpcweb] FILE KEY
//	ferry download [--server URL] [--protocol ...] KEY FILE
//	ferry stat KEY
//	ferry ls [PREFIX]
//	ferry rm KEY
//
// FILE may be "-" for standard input or output. `ferry serve` speaks
// Connect, gRPC and gRPC-Web on one port (HTTP/1.1 and h2c) and keeps
// objects in a local directory unless it is given an S3 bucket. The client
// commands read the server's URL from --server or FERRY_SERVER (default
// http://127.0.0.1:8080) and the protocol from --protocol or FERRY_PROTOCOL.
//
// Exit status: 0 on success, 1 on error, 2 on a usage error. Errors are
// printed on standard error with their Connect code.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr}, os.LookupEnv)
	stop()
	os.Exit(code)
}
