namespace Colo.Image.Tests;

public class CmdlineAndParsingTests
{
    [Fact]
    public void Cmdline_HasFixedPartAndIp()
    {
        Assert.Equal("console=ttyS0 ipv6.disable=1 panic=-1 quiet colo.ip=10.0.2.15/24",
            GuestKernelCmdline.Build("10.0.2.15/24"));
        Assert.Equal("console=ttyS0 ipv6.disable=1 panic=-1 quiet colo.ip=192.168.1.2/16 colo.gw=192.168.0.1",
            GuestKernelCmdline.Build("192.168.1.2/16", "192.168.0.1"));
        Assert.Equal(GuestKernelCmdline.Build("10.0.0.2/8"), GuestKernelCmdline.Build("10.0.0.2/8", null));
    }

    [Theory]
    [InlineData("10.0.2.15")]
    [InlineData("10.0.2.15/")]
    [InlineData("10.0.2.15/33")]
    [InlineData("10.0.2/24")]
    [InlineData("10.0.2.256/24")]
    [InlineData("010.0.2.1/24")]
    [InlineData("::1/64")]
    [InlineData("10.0.2.15/24 init=/bin/sh")]
    [InlineData("/24")]
    public void Cmdline_RejectsBadCidr(string s) =>
        Assert.Throws<ArgumentException>(() => GuestKernelCmdline.Build(s));

    [Fact]
    public void Cmdline_RejectsBadGateway() =>
        Assert.Throws<ArgumentException>(() => GuestKernelCmdline.Build("10.0.0.2/24", "10.0.0"));

    [Fact]
    public void ParseAptRecords_Works()
    {
        const string show = """
Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.192+3)
Version: 6.1.192-3
Depends: linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)
Description: Linux for x86-64 cloud (meta-package)
 This package depends on the latest Linux kernel.

Package: busybox-static
Version: 1:1.35.0-4+deb12u1+b1
Depends: libc6 (>= 2.34)
Description-en: Standalone rescue shell

""";
        var r = GuestImageBuilder.ParseAptRecords(show);
        Assert.Equal("6.1.192-3", r["linux-image-cloud-amd64"].Version);
        Assert.Equal("1:1.35.0-4+deb12u1+b1", r["busybox-static"].Version);
        Assert.Equal(("linux-image-6.1.0-57-cloud-amd64", (string?)"6.1.192-3"),
            GuestImageBuilder.ParseKernelDependencyWithVersion(r["linux-image-cloud-amd64"].Depends));
        Assert.Equal(("linux-image-6.1.0-9-cloud-amd64", (string?)null),
            GuestImageBuilder.ParseKernelDependencyWithVersion("linux-image-6.1.0-9-cloud-amd64"));
        Assert.Null(GuestImageBuilder.ParseKernelDependencyWithVersion("libc6 (>= 2.34)"));
        Assert.Empty(GuestImageBuilder.ParseAptRecords(""));
    }

    [Fact]
    public void ParseLdd_Works()
    {
        const string ldd = """
	linux-vdso.so.1 (0x00007ffd)
	libatomic.so.1 => /lib/x86_64-linux-gnu/libatomic.so.1 (0x00007f06)
	libfoo.so.2 => not found
	libstdc++.so.6 => /usr/lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f06)
	/lib64/ld-linux-x86-64.so.2 (0x00007f0632979000)
""";
        var (libs, missing) = GuestImageBuilder.ParseLdd(ldd);
        Assert.Equal(["libfoo.so.2"], missing);
        Assert.Equal(
            [("lib/x86_64-linux-gnu/libatomic.so.1", "/lib/x86_64-linux-gnu/libatomic.so.1"),
             ("usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"),
             ("lib64/ld-linux-x86-64.so.2", "/lib64/ld-linux-x86-64.so.2")],
            libs);
    }

    [Fact]
    public void ModuleNames_HandleCompressionAndDashes()
    {
        Assert.Equal("virtio_net", GuestImageBuilder.ModuleBaseName("virtio_net.ko"));
        Assert.Equal("virtio_net", GuestImageBuilder.ModuleBaseName("virtio_net.ko.xz"));
        Assert.Equal("virtio_net", GuestImageBuilder.ModuleBaseName("virtio_net.ko.zst"));
        Assert.Null(GuestImageBuilder.ModuleBaseName("modules.order"));
        Assert.Equal("crc_ccitt", GuestImageBuilder.NormalizeModuleName("crc-ccitt"));
    }

    [Fact]
    public void InputsHash_ChangesWithPackageVersionAndLibs()
    {
        var a = new GuestImageBuilder.BuildInputs("1", new("linux-image-x", "1"), new("busybox-static", "1"), new("redis-tools", "1"));
        var b = a with { RedisTools = new("redis-tools", "2") };
        var libs = new List<GuestImageBuilder.HostLib> { new("/lib/x.so", "aa") };
        var h = GuestImageBuilder.ComputeInputsHash(a, libs);
        Assert.Matches("^[0-9a-f]{64}$", h);
        Assert.Equal(h, GuestImageBuilder.ComputeInputsHash(a, libs));
        Assert.NotEqual(h, GuestImageBuilder.ComputeInputsHash(b, libs));
        Assert.NotEqual(h, GuestImageBuilder.ComputeInputsHash(a, [new("/lib/x.so", "bb")]));
    }

    [Fact]
    public void InitScript_HasRequiredPieces()
    {
        var init = GuestFiles.Init;
        Assert.StartsWith("#!/bin/sh\n", init);
        Assert.Contains("COLO-GUEST-READY", init);
        Assert.Contains("colo.ip=*", init);
        Assert.Contains("httpd -p 80 -h /www", init);
        Assert.Contains("redis-server /etc/colo/redis.conf", init);
        Assert.DoesNotContain("\r", init);
        Assert.Contains("protected-mode no", GuestFiles.RedisConf);
        Assert.Contains("save \"\"", GuestFiles.RedisConf);
    }
}
