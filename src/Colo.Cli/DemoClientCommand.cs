using System.CommandLine;
using System.Net;
using Colo.Demo;

namespace Colo.Cli;

/// <summary>
/// <c>colo demo-client</c> (hidden): the demo's client workload, run by <c>colo demo</c> inside the
/// client LAN namespace. Writes the result JSON to <c>--out</c>. With <c>--wire-interface</c> (and <c>--guest-mac</c>)
/// it also runs the wire probe (<see cref="WireCapture"/>) on that interface. With <c>--scenario disk</c> it runs the
/// <see cref="DiskWorkload"/> instead (the benchmark options are ignored).
/// </summary>
internal static class DemoClientCommand
{
    public static Command Create()
    {
        var guestIp = new Option<string>("--guest-ip") { Required = true, Description = "Guest IPv4 address" };
        var duration = new Option<int>("--duration") { DefaultValueFactory = _ => 40, Description = "Seconds" };
        var benchAt = new Option<double>("--bench-at") { DefaultValueFactory = _ => 1, Description = "Seconds after start to run redis-benchmark (negative: never)" };
        var benchRequests = new Option<int>("--bench-requests") { DefaultValueFactory = _ => 2000 };
        var benchClients = new Option<int>("--bench-clients") { DefaultValueFactory = _ => 10 };
        var output = new Option<string>("--out") { Required = true, Description = "Result JSON path" };
        var events = new Option<string?>("--events") { Description = "Events JSON-lines path" };
        var scenario = new Option<string>("--scenario") { DefaultValueFactory = _ => DemoReport.ServiceScenario, Description = "service: INCR, HTTP, redis-benchmark; disk: SET k<i> v<i> on one connection, then read every acknowledged key back" };
        scenario.AcceptOnlyFromAmong(DemoReport.ServiceScenario, DemoReport.DiskScenarioName);
        var wireInterface = new Option<string?>("--wire-interface") { Description = "Run the wire probe on this interface (capture of the INCR connection, ICMP echo and ARP to the guest); service scenario only" };
        var guestMac = new Option<string?>("--guest-mac") { Description = "The guest's MAC (required with --wire-interface)" };
        var pingIntervalMs = new Option<int>("--ping-interval-ms") { DefaultValueFactory = _ => 250, Description = "Milliseconds between the wire probe's echo requests" };
        var cmd = new Command("demo-client", "Client workload of the demo (Redis INCR on one connection, HTTP loop, redis-benchmark).")
        {
            guestIp, duration, benchAt, benchRequests, benchClients, output, events, scenario, wireInterface, guestMac, pingIntervalMs,
        };
        cmd.Hidden = true;
        cmd.SetAction(async (pr, _) =>
        {
            using var loggers = Logging.Create();
            if (pr.GetValue(scenario) == DemoReport.DiskScenarioName)
            {
                var diskOptions = new DiskWorkloadOptions
                {
                    GuestIp = IPAddress.Parse(pr.GetValue(guestIp)!),
                    Duration = TimeSpan.FromSeconds(pr.GetValue(duration)),
                    ResultPath = pr.GetValue(output),
                    EventsPath = pr.GetValue(events),
                };
                await new DiskWorkload(loggers.CreateLogger("disk-client")).RunAsync(diskOptions, Lifetime.Token);
                return 0;
            }
            double at = pr.GetValue(benchAt);
            var options = new ClientWorkloadOptions
            {
                GuestIp = IPAddress.Parse(pr.GetValue(guestIp)!),
                Duration = TimeSpan.FromSeconds(pr.GetValue(duration)),
                BenchmarkStart = at >= 0 ? TimeSpan.FromSeconds(at) : null,
                BenchmarkRequests = pr.GetValue(benchRequests),
                BenchmarkClients = pr.GetValue(benchClients),
                ResultPath = pr.GetValue(output),
                EventsPath = pr.GetValue(events),
                WireInterface = pr.GetValue(wireInterface),
                GuestMac = pr.GetValue(guestMac),
                PingInterval = TimeSpan.FromMilliseconds(pr.GetValue(pingIntervalMs)),
            };
            var result = await new ClientWorkload(loggers.CreateLogger("client")).RunAsync(options, Lifetime.Token);
            await File.WriteAllTextAsync(pr.GetValue(output)!, result.ToJson(), CancellationToken.None);
            return 0;
        });
        return cmd;
    }
}
