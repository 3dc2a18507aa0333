package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferryhq/ferry/telemetry"
	"github.com/ferryhq/ferry/upload"
)

// Exit statuses of the ferry command, for scripts: 0 success, 1 a failed
// transfer or call (the message names its Connect code), 2 a command line
// that cannot run, 130 interrupted by SIGINT or SIGTERM (what was sent or
// received is kept for the same command to continue).
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitInterrupted = 130
)

// stdio is where a command reads and writes.
type stdio struct {
	in  io.Reader
	out io.Writer
	err io.Writer
}

// lookupEnvFunc looks up an environment variable, like [os.LookupEnv].
type lookupEnvFunc func(key string) (string, bool)

// usageError is a command line the command cannot run: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// run runs the ferry command line args and returns the exit status.
func run(ctx context.Context, args []string, stdio stdio, lookupEnv lookupEnvFunc) int {
	root := newRootCommand(stdio, lookupEnv)
	// The subcommand cobra will run, as its path ("ferry upload").
	name := root.Name()
	if sub, _, err := root.Find(args); err == nil {
		name = sub.CommandPath()
	}
	if name != root.Name()+" serve" && telemetry.TracingEnabled("") {
		// One trace per client command: its RPCs' spans are children of
		// this one (ferry serve has its own provider: --otlp-endpoint).
		stop, err := telemetry.StartTracing(ctx, "ferry-cli", "")
		if err != nil {
			fmt.Fprintf(stdio.err, "ferry: tracing off: %v\n", err)
		} else {
			defer func() {
				flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = stop(flushCtx)
			}()
			var span trace.Span
			ctx, span = otel.Tracer("github.com/ferryhq/ferry/cmd/ferry").Start(ctx, name)
			defer span.End()
		}
	}
	root.SetArgs(args)
	root.SetIn(stdio.in)
	root.SetOut(stdio.out)
	root.SetErr(stdio.err)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	if errors.As(err, new(usageError)) {
		fmt.Fprintf(stdio.err, "%s: %v\nRun '%s --help' for usage.\n", cmd.CommandPath(), err, cmd.CommandPath())
		return exitUsage
	}
	printError(stdio.err, cmd.CommandPath(), err)
	if ctx.Err() != nil {
		return exitInterrupted
	}
	return exitError
}

// printError writes err on w, after the command's name. The text of a
// Connect error already leads with its code ("not_found: ..."); any other
// error that wraps no Connect error is printed as it is.
func printError(w io.Writer, name string, err error) {
	fmt.Fprintf(w, "%s: %v\n", name, err)
	if interrupted := (*upload.InterruptedError)(nil); errors.As(err, &interrupted) {
		switch connect.CodeOf(err) {
		case connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodeAlreadyExists, connect.CodeFailedPrecondition:
		default:
			fmt.Fprintf(w, "The chunks sent so far are kept: run the same command with --resume %s to send the rest.\n", interrupted.UploadID)
		}
	}
}

// newRootCommand returns the ferry command and its subcommands.
func newRootCommand(stdio stdio, lookupEnv lookupEnvFunc) *cobra.Command {
	root := &cobra.Command{
		Use:   "ferry",
		Short: "Move files between clients and S3-compatible storage over Connect RPC",
		Long: `ferry moves files of any size between clients and S3-compatible object
storage over Connect RPC. One server speaks Connect, gRPC and gRPC-Web on
one port; uploads are resumable chunked multipart uploads whose state lives
in the object store; downloads are ranged and resumable.

The client commands read their settings from flags or the environment:
  --server       FERRY_SERVER       server URL (default http://127.0.0.1:8080)
  --protocol     FERRY_PROTOCOL     connect, grpc or grpcweb (default connect)
  --token        FERRY_TOKEN        bearer token for a server that requires one
  --ca-cert      FERRY_CA_CERT      PEM CA certificates for an https:// server
  --concurrency  FERRY_CONCURRENCY  parallel streams (default 4)
  --chunk-size   FERRY_CHUNK_SIZE   chunk size, such as 16MiB
Interrupted uploads and downloads continue when the same command is run
again; upload state is kept under FERRY_CACHE_DIR (default: the user's
cache directory).

Exit status: 0 success; 1 a failed transfer or call (the message names
its Connect code, such as not_found or permission_denied); 2 a command
line that cannot run; 130 interrupted by Ctrl-C or SIGTERM.`,
		Example: `  ferry serve --data /srv/ferry
  ferry upload ./backup.tar.zst backups/2026-11-22.tar.zst
  tar c ./site | ferry upload - site.tar
  ferry download backups/2026-11-22.tar.zst ./restore.tar.zst
  ferry sync ./site web/
  ferry ls backups/`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q", args[0])
			}
			return nil
		},
		RunE: func(*cobra.Command, []string) error {
			return usagef("missing command")
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		newServeCommand(stdio, lookupEnv, serve),
		newUploadCommand(stdio, lookupEnv),
		newDownloadCommand(stdio, lookupEnv),
		newStatCommand(stdio, lookupEnv),
		newListCommand(stdio, lookupEnv),
		newRemoveCommand(stdio, lookupEnv),
		newSyncCommand(stdio, lookupEnv),
	)
	return root
}

// exactArgs is cobra.ExactArgs with a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// maxArgs is cobra.MaximumNArgs with a usage error.
func maxArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.MaximumNArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}
