using System.Net;
using System.Net.NetworkInformation;
using Colo.Node;

namespace Colo.Node.Tests;

public sealed class NodeConfigTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("colo-node-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private NodeConfig Valid()
    {
        string kernel = Path.Combine(_dir, "vmlinuz");
        string initrd = Path.Combine(_dir, "initrd.img");
        File.WriteAllText(kernel, "k");
        File.WriteAllText(initrd, "i");
        return new NodeConfig
        {
            VmName = "vm1",
            RunDirectory = _dir,
            KernelPath = kernel,
            InitrdPath = initrd,
            KernelCmdline = "console=ttyS0",
            GuestMac = "52:54:00:c0:10:01",
            GuestIp = "198.18.0.10",
            LinkAddress = "198.19.0.2",
        };
    }

    [Fact]
    public void Load_SavedConfig_RoundTripsWithSnakeCaseKeys()
    {
        var cfg = Valid() with { CompareTimeoutMs = 250, MaxEpochMs = 0 };
        string path = Path.Combine(_dir, "c.json");
        cfg.Save(path);
        Assert.Contains("\"compare_timeout_ms\": 250", File.ReadAllText(path));
        var back = NodeConfig.Load(path);
        Assert.Equal(cfg, back);
    }

    [Fact]
    public void Load_MemoryMib_IsReadAndUnknownKeysAreRejected()
    {
        string path = Path.Combine(_dir, "c.json");
        Valid().Save(path);
        string text = File.ReadAllText(path);
        Assert.Contains("\"memory_mib\": 256", text);
        File.WriteAllText(path, text.Replace("\"memory_mib\": 256", "\"memory_mib\": 1024"));
        Assert.Equal(1024, NodeConfig.Load(path).MemoryMiB);
        File.WriteAllText(path, text.Replace("\"memory_mib\": 256", "\"memory_mb\": 1024"));
        Assert.Contains("memory_mb", Assert.Throws<InvalidDataException>(() => NodeConfig.Load(path)).Message);
    }

    [Theory]
    [InlineData("{\"vm_name\": ", "config")]
    [InlineData("null", "is empty")]
    public void Load_MalformedJson_ThrowsInvalidData(string text, string expected)
    {
        string path = Path.Combine(_dir, "bad.json");
        File.WriteAllText(path, text);
        var e = Assert.Throws<InvalidDataException>(() => NodeConfig.Load(path));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Validate_BadValues_NameTheKey()
    {
        Assert.Contains("guest_mac", Assert.Throws<InvalidDataException>(() => (Valid() with { GuestMac = "nope" }).Validate()).Message);
        Assert.Contains("guest_mac", Assert.Throws<InvalidDataException>(() => (Valid() with { GuestMac = "52:54" }).Validate()).Message);
        Assert.Contains("guest_mac", Assert.Throws<InvalidDataException>(() => (Valid() with { GuestMac = "01:00:5e:00:00:01" }).Validate()).Message);
        Assert.Contains("guest_mac", Assert.Throws<InvalidDataException>(() => (Valid() with { GuestMac = "52-54-00-c0-10-01" }).Validate()).Message);
        Assert.Contains("guest_mac", Assert.Throws<InvalidDataException>(() => (Valid() with { GuestMac = "00:00:00:00:00:00" }).Validate()).Message);
        Assert.Contains("tap_name", Assert.Throws<InvalidDataException>(() => (Valid() with { TapName = null! }).Validate()).Message);
        Assert.Contains("run_directory", Assert.Throws<InvalidDataException>(() => (Valid() with { RunDirectory = "" }).Validate()).Message);
        Assert.Contains("guest_ip", Assert.Throws<InvalidDataException>(() => (Valid() with { GuestIp = "::1" }).Validate()).Message);
        Assert.Contains("heartbeat_timeout_ms", Assert.Throws<InvalidDataException>(() => (Valid() with { HeartbeatTimeoutMs = 50 }).Validate()).Message);
        Assert.Contains("kernel_path", Assert.Throws<InvalidDataException>(() => (Valid() with { KernelPath = "/nonexistent" }).Validate()).Message);
        Assert.Contains("vm_name", Assert.Throws<InvalidDataException>(() => (Valid() with { VmName = "a/b" }).Validate()).Message);
        Assert.Contains("compare_timeout_ms", Assert.Throws<InvalidDataException>(() => (Valid() with { CompareTimeoutMs = 0 }).Validate()).Message);
    }

    [Theory]
    [InlineData(FarewellKind.Survive, "PVM died")]
    [InlineData(FarewellKind.Fence, "the secondary took over")]
    public void Farewell_RoundTrips(FarewellKind kind, string reason)
    {
        var (k, r) = Farewell.Decode(new System.Buffers.ReadOnlySequence<byte>(Farewell.Encode(kind, reason)));
        Assert.Equal(kind, k);
        Assert.Equal(reason, r);
    }

    [Fact]
    public void Farewell_UnknownKindOrEmpty_IsAProtocolViolation()
    {
        Assert.Throws<Colo.Link.LinkProtocolException>(() => Farewell.Decode(new System.Buffers.ReadOnlySequence<byte>(new byte[] { 9, 65 })));
        Assert.Throws<Colo.Link.LinkProtocolException>(() => Farewell.Decode(System.Buffers.ReadOnlySequence<byte>.Empty));
    }

    [Fact]
    public void GratuitousArp_IsAnArpAnnouncementForTheGuest()
    {
        var frame = new byte[GratuitousArp.FrameLength];
        GratuitousArp.Build(frame, PhysicalAddress.Parse("52-54-00-C0-10-01"), IPAddress.Parse("198.18.0.10"));
        Assert.All(frame[..6], b => Assert.Equal(0xFF, b));                       // broadcast
        Assert.Equal(new byte[] { 0x52, 0x54, 0x00, 0xC0, 0x10, 0x01 }, frame[6..12]); // source MAC
        Assert.Equal(new byte[] { 0x08, 0x06 }, frame[12..14]);                      // ARP
        Assert.Equal(new byte[] { 0, 1, 8, 0, 6, 4, 0, 1 }, frame[14..22]);          // Ethernet/IPv4 request
        Assert.Equal(new byte[] { 198, 18, 0, 10 }, frame[28..32]);                   // sender IP
        Assert.Equal(new byte[] { 198, 18, 0, 10 }, frame[38..42]);                   // target IP = sender IP
    }

    [Fact]
    public void IsRarp_OnlyEthertype8035()
    {
        var frame = new byte[60];
        frame[12] = 0x80;
        frame[13] = 0x35;
        Assert.True(Colo.Node.Secondary.SecondaryProxy.IsRarp(frame));
        frame[13] = 0x06;
        Assert.False(Colo.Node.Secondary.SecondaryProxy.IsRarp(frame));
        Assert.False(Colo.Node.Secondary.SecondaryProxy.IsRarp(new byte[10]));
    }

    [Fact]
    public void Status_WriteThenRead_RoundTrips()
    {
        var s = new NodeStatus { Role = "primary", State = "protected", Epoch = 7, Checkpoints = 6 };
        s.PauseMs.Add(12.5);
        string path = Path.Combine(_dir, "status.json");
        s.Write(path);
        var back = NodeStatus.TryRead(path)!;
        Assert.Equal("protected", back.State);
        Assert.Equal(7UL, back.Epoch);
        Assert.Equal([12.5], back.PauseMs);
        Assert.Null(NodeStatus.TryRead(Path.Combine(_dir, "missing.json")));
    }

    [Theory]
    [InlineData("relative/disk.img", "disk_image must be an absolute path")]
    [InlineData("/a,b/disk.img", "disk_image must be an absolute path")]
    [InlineData("/no/such/dir/disk.img", "its directory does not exist")]
    public void Validate_BadDiskImage_NamesTheKey(string path, string message)
    {
        var e = Assert.Throws<InvalidDataException>(() => (Valid() with { DiskImage = path }).Validate());
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void Load_DiskKeys_RoundTrip()
    {
        var cfg = Valid() with { DiskImage = Path.Combine(_dir, "disk.img"), DiskBufferMemoryMib = 0, DiskOverlayMemoryMib = 8, DiskForwardQueueMib = 16 };
        string path = Path.Combine(_dir, "d.json");
        cfg.Save(path);
        Assert.Contains("\"disk_image\": ", File.ReadAllText(path));
        Assert.Contains("\"disk_forward_queue_mib\": 16", File.ReadAllText(path));
        Assert.Equal(cfg, NodeConfig.Load(path));
        Assert.Throws<InvalidDataException>(() => (cfg with { DiskForwardQueueMib = 1 }).Validate());
        Assert.Throws<InvalidDataException>(() => (cfg with { DiskBufferMemoryMib = -1 }).Validate());
    }
}
