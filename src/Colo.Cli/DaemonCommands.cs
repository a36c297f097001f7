using System.CommandLine;
using System.Runtime.InteropServices;
using System.Text.Json;
using Colo.Node;
using Colo.Node.Primary;
using Colo.Node.Secondary;

namespace Colo.Cli;

/// <summary><c>colo primary</c>, <c>colo secondary</c> and <c>colo status</c>.</summary>
internal static class DaemonCommands
{
    private static Option<string> ConfigOption() => new("--config") { Description = "Node config file (JSON, see docs/OPERATIONS.md)", Required = true };

    private static Option<bool> VerboseOption() => new("--verbose") { Description = "Debug logging" };

    public static Command Primary()
    {
        var config = ConfigOption();
        var verbose = VerboseOption();
        var cmd = new Command("primary", "Run the primary daemon: boots the PVM, protects it with the secondary, checkpoints on demand.") { config, verbose };
        cmd.SetAction(async (pr, _) =>
        {
            using var loggers = Logging.Create(pr.GetValue(verbose));
            var cfg = LoadConfig(pr.GetValue(config)!);
            if (cfg == null)
                return 64;
            if (cfg.DiskImage is { } disk && !File.Exists(disk))
            {
                Console.Error.WriteLine(Directory.Exists(disk)
                    ? $"colo: config: disk_image {disk} is a directory, not a raw image"
                    : $"colo: config: disk_image {disk} does not exist (the primary's disk must exist; make one with: colo disk create {disk})");
                return 64;
            }
            var node = new PrimaryNode(cfg, loggers);
            // SIGUSR1 (10 on Linux): an operator checkpoint (colo checkpoint). Raw signal numbers are allowed by PosixSignalRegistration.
            using var usr1 = PosixSignalRegistration.Create((PosixSignal)SigUsr1, ctx =>
            {
                ctx.Cancel = true;
                node.RequestOperatorCheckpoint();
            });
            return await node.RunAsync(Lifetime.Token);
        });
        return cmd;
    }

    public static Command Secondary()
    {
        var config = ConfigOption();
        var verbose = VerboseOption();
        var cmd = new Command("secondary", "Run the secondary daemon: keeps the SVM in step and fails over when the primary dies.") { config, verbose };
        cmd.SetAction(async (pr, _) =>
        {
            using var loggers = Logging.Create(pr.GetValue(verbose));
            var cfg = LoadConfig(pr.GetValue(config)!);
            if (cfg == null)
                return 64;
            return await new SecondaryNode(cfg, loggers).RunAsync(Lifetime.Token);
        });
        return cmd;
    }

    private const int SigUsr1 = 10;

    /// <summary><c>colo checkpoint --run-dir DIR</c>: asks the primary daemon of that run directory for a checkpoint now and waits for it.</summary>
    public static Command Checkpoint()
    {
        var runDir = new Option<string>("--run-dir") { Description = "The primary daemon's run directory", Required = true };
        var timeout = new Option<int>("--timeout-ms") { Description = "How long to wait for the checkpoint", DefaultValueFactory = _ => 30000 };
        var cmd = new Command("checkpoint", "Ask the primary daemon for a checkpoint now (operator trigger) and wait until it is done.") { runDir, timeout };
        cmd.SetAction(async (pr, _) =>
        {
            string path = Path.Combine(pr.GetValue(runDir)!, "status.json");
            int limit = pr.GetValue(timeout);
            if (limit <= 0)
            {
                Console.Error.WriteLine($"colo checkpoint: --timeout-ms must be positive (was {limit})");
                return 64;
            }
            var before = NodeStatus.TryRead(path);
            if (before == null)
            {
                Console.Error.WriteLine($"colo checkpoint: no status at {path}");
                return 1;
            }
            if (before.Role != "primary" || before.FailedOver || before.State != "protected")
            {
                Console.Error.WriteLine($"colo checkpoint: the daemon is {before.Role}, state {before.State}: only a protected primary checkpoints");
                return 1;
            }
            if (!IsColoDaemon(before.DaemonPid) || !ChildProcess.Signal(before.DaemonPid, SigUsr1))
            {
                Console.Error.WriteLine($"colo checkpoint: daemon pid {before.DaemonPid} is not running");
                return 1;
            }
            var watch = System.Diagnostics.Stopwatch.StartNew();
            while (watch.ElapsedMilliseconds < limit && !Lifetime.Token.IsCancellationRequested)
            {
                var now = NodeStatus.TryRead(path);
                if (now != null && now.CheckpointsByReason.GetValueOrDefault("operator") > before.CheckpointsByReason.GetValueOrDefault("operator"))
                {
                    Console.WriteLine($"checkpoint {now.Epoch} done (pause {now.PauseMs.LastOrDefault():F1} ms)");
                    return 0;
                }
                if (now != null && (now.State != "protected" || now.FailedOver))
                {
                    // The secondary was lost (or the PVM died) before the checkpoint: it will not come.
                    Console.Error.WriteLine($"colo checkpoint: the daemon left the protected state (now {now.State}" +
                        (now.PeerLostReason is { } why ? $": {why}" : "") + "); no checkpoint");
                    return 1;
                }
                await Task.Delay(50);
            }
            Console.Error.WriteLine($"colo checkpoint: no operator checkpoint within {limit} ms");
            return 1;
        });
        return cmd;
    }

    /// <summary>True when <paramref name="pid"/> is a running colo daemon of <paramref name="role"/> (its command line names the role).</summary>
    private static bool IsColoDaemon(int pid, string role = "primary")
    {
        try
        {
            return pid > 0 && File.ReadAllText($"/proc/{pid}/cmdline").Contains(role, StringComparison.Ordinal);
        }
        catch (IOException)
        {
            return false;
        }
    }

    public static Command Status()
    {
        var runDir = new Option<string>("--run-dir") { Description = "A daemon's run directory", Required = true };
        var cmd = new Command("status", "Print a daemon's status (role, state, epoch, checkpoints, counters).") { runDir };
        cmd.SetAction(pr =>
        {
            string path = Path.Combine(pr.GetValue(runDir)!, "status.json");
            var status = NodeStatus.TryRead(path);
            if (status == null)
            {
                Console.Error.WriteLine($"colo: no status at {path}");
                return 1;
            }
            Console.WriteLine(JsonSerializer.Serialize(status, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
            bool ended = status.State is "stopped" or "error" or "fenced" or "pvm-dead";
            if (!ended && status.Role is { } role && !IsColoDaemon(status.DaemonPid, role))
            {
                // A daemon killed with its host (SIGKILL) never writes a final state: this file is its last word.
                Console.Error.WriteLine($"colo: warning: daemon pid {status.DaemonPid} is not running; state \"{status.State}\" is what it last wrote");
            }
            return 0;
        });
        return cmd;
    }

    private static NodeConfig? LoadConfig(string path)
    {
        try
        {
            return NodeConfig.Load(path);
        }
        catch (Exception e) when (e is InvalidDataException or IOException)
        {
            Console.Error.WriteLine("colo: " + e.Message);
            return null;
        }
    }
}
