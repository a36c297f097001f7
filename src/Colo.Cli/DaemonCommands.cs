using System.CommandLine;
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
            return await new PrimaryNode(cfg, loggers).RunAsync(Lifetime.Token);
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
