using System.Text.RegularExpressions;
using Colo.Demo;
using Microsoft.Extensions.Logging;

namespace Colo.Cli;

/// <summary>
/// Removes what a demo run that died without teardown (SIGKILL, power loss) left behind: its daemons and QEMUs
/// (found by the run's unique directory <c>/tmp/colo-demo-TAG/</c> in their command line and killed by PID), its
/// guest RAM files <c>/dev/shm/colo-TAG-*</c> and its namespaces. A run whose tag is still locked is left alone.
/// </summary>
internal static partial class StaleRunSweeper
{
    [GeneratedRegex(@"/tmp/colo-demo-([0-9a-f]{4})/")]
    private static partial Regex RunDirInCmdline();

    [GeneratedRegex(@"^colo-([0-9a-f]{4})-")]
    private static partial Regex RamFile();

    public static void Sweep(ILogger log)
    {
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid) || pid == Environment.ProcessId)
                continue;
            string cmdline;
            try
            {
                cmdline = File.ReadAllText(Path.Combine(dir, "cmdline")).Replace('\0', ' ');
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue;
            }
            var m = RunDirInCmdline().Match(cmdline);
            if (m.Success && !DemoTopology.IsTagInUse(m.Groups[1].Value) && ChildProcess.Signal(pid, 9))
                log.LogWarning("killed pid {Pid} left by demo run {Tag}", pid, m.Groups[1].Value);
        }
        foreach (string file in Directory.EnumerateFiles("/dev/shm", "colo-*"))
        {
            var m = RamFile().Match(Path.GetFileName(file));
            if (m.Success && !DemoTopology.IsTagInUse(m.Groups[1].Value))
            {
                File.Delete(file);
                log.LogWarning("removed {File} left by demo run {Tag}", file, m.Groups[1].Value);
            }
        }
        DemoTopology.CleanupStale(log);
    }
}
