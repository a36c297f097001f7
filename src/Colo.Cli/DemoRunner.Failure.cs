using Colo.Node;
using Microsoft.Extensions.Logging;

namespace Colo.Cli;

/// <summary>The failure injection of the demo (<c>--kill</c>).</summary>
internal sealed partial class DemoRunner
{
    /// <summary>
    /// Waits until <see cref="DemoOptions.KillAtS"/> after <paramref name="clientStart"/> (or the client's exit) and
    /// injects the failure chosen by <see cref="DemoOptions.Kill"/>. Returns the kill time (Unix ms; 0 when nothing was
    /// killed) and the primary's status read just before it.
    /// </summary>
    private async Task<(long KilledAtUnixMs, NodeStatus? PriBeforeKill)> InjectFailureAsync(ChildProcess client, DateTimeOffset clientStart, CancellationToken ct)
    {
        if (_o.KillAtS < 0)
            return (0, null);
        var killTime = clientStart + TimeSpan.FromSeconds(_o.KillAtS);
        while (DateTimeOffset.UtcNow < killTime && !client.HasExited)
            await Task.Delay(50, ct);
        long killedAtUnixMs = 0;
        var priBeforeKill = NodeStatus.TryRead(PriStatus);
        if (_o.Kill is "primary-stall" or "secondary-stall")
        {
            var st = NodeStatus.TryRead(_o.Kill == "primary-stall" ? PriStatus : SecStatus);
            int daemon = _o.Kill == "primary-stall" ? _primary.Pid : _secondary.Pid;
            int[] pids = [daemon, st?.VmPid ?? 0, st?.StandbyPid ?? 0];
            foreach (int pid in pids)
                ChildProcess.Signal(pid, 19);
            killedAtUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            _log.LogWarning("froze the {Host} (daemon pid {Pid}) for 1.5 s at {S:F1} s", _o.Kill[..^6], daemon, _o.KillAtS);
            await Task.Delay(1500, ct);
            foreach (int pid in pids)
                ChildProcess.Signal(pid, 18);
        }
        else if (_o.KillSecondary)
        {
            var secBefore = NodeStatus.TryRead(SecStatus);
            if (ChildProcess.Signal(_secondary.Pid, 9))
            {
                killedAtUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                KillQemus(secBefore);
                _log.LogWarning("SIGKILLed the secondary daemon (pid {Pid}) and its QEMUs at {S:F1} s", _secondary.Pid, _o.KillAtS);
            }
        }
        else
        {
            int pvmPid = priBeforeKill?.VmPid ?? 0;
            if (_o.Kill == "primary-hang" && pvmPid > 0 && ChildProcess.Signal(_primary.Pid, 19) && ChildProcess.Signal(pvmPid, 19))
            {
                killedAtUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                _log.LogWarning("froze the primary daemon (pid {Pid}) and its QEMU (pid {Qemu}) with SIGSTOP at {S:F1} s", _primary.Pid, pvmPid, _o.KillAtS);
            }
            else if (_o.Kill == "primary-host" && pvmPid > 0 && ChildProcess.Signal(_primary.Pid, 9) && ChildProcess.Signal(pvmPid, 9))
            {
                killedAtUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                _log.LogWarning("SIGKILLed the primary daemon (pid {Pid}) and its QEMU (pid {Qemu}) at {S:F1} s", _primary.Pid, pvmPid, _o.KillAtS);
            }
            else if (_o.Kill == "primary" && pvmPid > 0 && ChildProcess.Signal(pvmPid, 9))
            {
                killedAtUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                _log.LogWarning("SIGKILLed the primary's QEMU (pid {Pid}) at {S:F3} s", pvmPid, _o.KillAtS);
            }
            else
            {
                _log.LogError("could not kill the PVM (pid {Pid})", pvmPid);
            }
        }
        return (killedAtUnixMs, priBeforeKill);
    }
}
