using Xunit.Abstractions;

namespace Colo.Demo.Tests;

public class DemoTopologyTests(ITestOutputHelper output)
{
    private static async Task<bool> NamespaceExists(string ns) =>
        (await TestTools.RunAsync("ip", "netns", "list")).StdOut.Split('\n').Any(l => l.Split(' ')[0] == ns);

    private static async Task<ProcessResult> In(string ns, string file, params string[] args) =>
        await DemoProcess.RunAsync(DemoTopology.ExecIn(ns, file, args), TimeSpan.FromSeconds(15));

    [RootFact]
    public async Task BuildsIsolatedTopologyAndRemovesIt()
    {
        string[] names;
        await using (DemoTopology topo = await DemoTopology.CreateAsync())
        {
            output.WriteLine($"tag {topo.Tag}: {string.Join(", ", topo.Namespaces)}");
            Assert.Matches("^[0-9a-f]{4}$", topo.Tag);
            names = [.. topo.Namespaces];
            Assert.Equal($"colo-{topo.Tag}-pri", topo.PrimaryNamespace);
            Assert.Equal($"colo-{topo.Tag}-sec", topo.SecondaryNamespace);
            Assert.Equal($"colo-{topo.Tag}-lan", topo.LanNamespace);
            Assert.Equal("198.18.0.100", topo.ClientIp.ToString());
            Assert.Equal("198.18.0.10", topo.GuestIp.ToString());
            Assert.Equal("52:54:00:c0:10:01", topo.GuestMac);
            foreach (string ns in names)
                Assert.True(await NamespaceExists(ns), ns);

            // Structure: tap0 and lan0 enslaved to br0 in both hosts; LAN ports on the LAN bridge.
            foreach (string host in new[] { topo.PrimaryNamespace, topo.SecondaryNamespace })
            {
                string links = (await topo.IpAsync(["-n", host, "-o", "link", "show", "master", "br0"])).Trim();
                Assert.Contains("tap0", links);
                Assert.Contains("lan0", links);
                string br = await topo.IpAsync(["-n", host, "-d", "link", "show", "br0"]);
                Assert.Contains("forward_delay 0", br);
                Assert.Contains("stp_state 0", br);
                Assert.Contains("ageing_time 30000", br);
                Assert.Equal("1", (await In(host, "sysctl", "-n", "net.ipv6.conf.all.disable_ipv6")).StdOut.Trim());
            }
            string lanPorts = await topo.IpAsync(["-n", topo.LanNamespace, "-o", "link", "show", "master", "br0"]);
            Assert.Contains("p-pri", lanPorts);
            Assert.Contains("p-sec", lanPorts);
            Assert.Contains("198.18.0.100/24", await topo.IpAsync(["-n", topo.LanNamespace, "-o", "addr", "show", "dev", "br0"]));

            // Replication link works...
            ProcessResult rep = await In(topo.PrimaryNamespace, "ping", "-c", "1", "-W", "1", "198.19.0.2");
            output.WriteLine(rep.StdOut);
            Assert.Equal(0, rep.ExitCode);
            // ...and is not reachable from the client LAN.
            ProcessResult isolated = await In(topo.LanNamespace, "ping", "-c", "1", "-W", "1", "198.19.0.1");
            Assert.NotEqual(0, isolated.ExitCode);

            // L2 path client -> p-pri -> lan0 -> primary's br0: give the primary bridge the guest address
            // for a moment and ping it from the client namespace.
            await topo.IpAsync(["-n", topo.PrimaryNamespace, "addr", "add", "198.18.0.10/24", "dev", "br0"]);
            ProcessResult l2 = await In(topo.LanNamespace, "ping", "-c", "1", "-W", "2", "198.18.0.10");
            output.WriteLine(l2.StdOut);
            Assert.Equal(0, l2.ExitCode);
            await topo.IpAsync(["-n", topo.PrimaryNamespace, "addr", "del", "198.18.0.10/24", "dev", "br0"]);

            // A live topology is not stale.
            Assert.Equal(0, DemoTopology.CleanupStale(null, t => t == topo.Tag));
            Assert.True(await NamespaceExists(topo.LanNamespace));

            topo.Dispose();
            topo.Dispose(); // idempotent
        }
        foreach (string ns in names)
            Assert.False(await NamespaceExists(ns), ns);
    }

    [RootFact]
    public async Task CleanupStaleRemovesOnlyUnlockedOwnNamespaces()
    {
        string tag;
        do
        {
            tag = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(2));
        }
        while (await NamespaceExists($"colo-{tag}-pri") || await NamespaceExists($"colo-{tag}-lan"));

        string stalePri = $"colo-{tag}-pri", staleLan = $"colo-{tag}-lan", other = $"colo-{tag}-xyz";
        try
        {
            foreach (string ns in new[] { stalePri, staleLan, other })
                Assert.Equal(0, (await TestTools.RunAsync("ip", "netns", "add", ns)).ExitCode);
            Assert.Equal(2, DemoTopology.CleanupStale(null, t => t == tag));
            Assert.False(await NamespaceExists(stalePri));
            Assert.False(await NamespaceExists(staleLan));
            Assert.True(await NamespaceExists(other)); // not our naming: untouched
        }
        finally
        {
            foreach (string ns in new[] { stalePri, staleLan, other })
                await TestTools.RunAsync("ip", "netns", "delete", ns);
        }
    }

    [RootFact]
    public async Task ClientReachesTcpServiceOnPrimaryBridge()
    {
        if (!TestTools.OnPath("redis-server") || !TestTools.OnPath("redis-cli"))
        {
            output.WriteLine("redis-server/redis-cli not installed; skipped");
            return;
        }
        await using DemoTopology topo = await DemoTopology.CreateAsync();
        // Stand-in for the guest: the primary host's bridge holds the guest address, redis listens on it.
        await topo.IpAsync(["-n", topo.PrimaryNamespace, "addr", "add", $"{topo.GuestIp}/{topo.LanPrefixLength}", "dev", "br0"]);
        var psi = DemoTopology.ExecIn(topo.PrimaryNamespace, "redis-server", "--port", "6379", "--bind", topo.GuestIp.ToString(), "--save", "", "--protected-mode", "no", "--daemonize", "no");
        psi.RedirectStandardOutput = true;
        using var server = System.Diagnostics.Process.Start(psi)!; // `ip netns exec` execs: this PID is redis-server
        try
        {
            ProcessResult r = new(1, "", "", false);
            for (int i = 0; i < 50 && r.StdOut.Trim() != "1"; i++)
            {
                await Task.Delay(100);
                r = await In(topo.LanNamespace, "redis-cli", "-h", topo.GuestIp.ToString(), "-p", "6379", "INCR", "demo");
            }
            output.WriteLine($"{r.ExitCode} {r.StdOut} {r.StdErr}");
            Assert.Equal("1", r.StdOut.Trim());
        }
        finally
        {
            server.Kill();
            server.WaitForExit(5000);
        }
    }
}
