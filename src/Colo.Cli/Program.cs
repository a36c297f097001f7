using System.CommandLine;
using System.Runtime.InteropServices;
using Colo.Cli;

// SIGINT, SIGTERM, SIGHUP and SIGQUIT cancel Lifetime.Token and the command cleans up (daemons stop their VMs,
// the demo tears down its topology). Every step of that clean-up has a timeout, so further signals are ignored
// rather than cutting it short; SIGKILL remains for the impatient (the next demo sweeps what is left).
// Heartbeats and QMP timeouts run on the thread pool; page hashing uses every core. Enough threads up front keep
// a busy checkpoint from delaying a heartbeat by the pool's thread-injection delay.
ThreadPool.GetMinThreads(out int minWorkers, out int minIo);
ThreadPool.SetMinThreads(Math.Max(minWorkers, 32), Math.Max(minIo, 32));

using var shutdown = new CancellationTokenSource();
Lifetime.Token = shutdown.Token;
void OnSignal(PosixSignalContext context)
{
    context.Cancel = true;
    if (!shutdown.IsCancellationRequested)
        shutdown.Cancel();
}
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
using var sighup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, OnSignal);
using var sigquit = PosixSignalRegistration.Create(PosixSignal.SIGQUIT, OnSignal);

var root = new RootCommand("COLO for QEMU: non-stop service for a VM by running a primary and a secondary VM in lock-step on output.");
root.Subcommands.Add(DemoCommand.Create());
root.Subcommands.Add(DaemonCommands.Primary());
root.Subcommands.Add(DaemonCommands.Secondary());
root.Subcommands.Add(DaemonCommands.Status());
root.Subcommands.Add(DaemonCommands.Checkpoint());
root.Subcommands.Add(ImageCommand.Create());
root.Subcommands.Add(DiskCommand.Create());
root.Subcommands.Add(DemoClientCommand.Create());
return await root.Parse(args).InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null });
